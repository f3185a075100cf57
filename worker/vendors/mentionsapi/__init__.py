"""Everything mentionsync knows about MentionsAPI."""

"""Everything mentionsync knows about MentionLab."""

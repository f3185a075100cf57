"""Vendor API clients. Each vendor's quirks stay inside its own module."""

from worker.clients.base import Target, VendorClient
from worker.clients.mentionlab import MentionLabClient
from worker.clients.mentionsapi import MentionsAPIClient

__all__ = ["MentionLabClient", "MentionsAPIClient", "Target", "VendorClient"]

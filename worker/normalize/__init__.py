"""Pure functions that turn a vendor's response body into table rows.

No I/O here: a normalizer takes the parsed payload and returns rows, or raises
PayloadError with a reason fit to show a user. Tested on their own.
"""

from worker.normalize.common import Normalized, PayloadError, parse_json

__all__ = ["Normalized", "PayloadError", "parse_json"]

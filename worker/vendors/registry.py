"""The vendors mentionsync archives from. Adding one: a package beside these
(a VendorSpec, its normalizer, its settings mixin on worker.config.Settings),
a member of models.Vendor and a migration for its tables, then one line here."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from models import Vendor
from worker.vendors.base import VendorSpec
from worker.vendors.mentionlab.spec import MENTIONLAB
from worker.vendors.mentionsapi.spec import MENTIONSAPI

VENDORS: Mapping[Vendor, VendorSpec] = MappingProxyType(
    {spec.vendor: spec for spec in (MENTIONSAPI, MENTIONLAB)}
)

__all__ = ["MENTIONLAB", "MENTIONSAPI", "VENDORS", "VendorSpec"]

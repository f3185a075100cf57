"""One package per vendor API, behind the interface of worker/vendors/base.py."""

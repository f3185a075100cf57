"""Response bodies that could not be archived, kept verbatim with the reason."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, ForeignKey, Integer, LargeBinary, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base
from models.tracking import BigId, Vendor, _enum


class QuarantinedPayload(Base):
    __tablename__ = "quarantined_payloads"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    tracked_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("tracked_ids.id", ondelete="CASCADE"), index=True
    )
    vendor: Mapped[Vendor] = mapped_column(_enum(Vendor, "vendor"))
    external_id: Mapped[str] = mapped_column(String(256))
    http_status: Mapped[int | None] = mapped_column(Integer)
    reason: Mapped[str] = mapped_column(Text)
    # Bytes, not text: a body that is not valid UTF-8 or JSON is kept as received
    # (up to the read cap).
    body: Mapped[bytes] = mapped_column(LargeBinary)
    body_truncated: Mapped[bool]
    received_at: Mapped[datetime]

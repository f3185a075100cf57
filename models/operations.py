"""Tables of the operations side: webhook deliveries seen, alerts sent, beats alive."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base


class WebhookDelivery(Base):
    """One row per webhook event accepted, keyed by the vendor's event id.

    The vendor redelivers an event until it is acknowledged, under the same event
    id; the primary key turns a redelivery into a no-op.
    """

    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        # Beat prunes deliveries older than the retention window by this.
        Index("ix_webhook_deliveries_received_at", "received_at"),
    )

    vendor: Mapped[str] = mapped_column(String(32), primary_key=True)
    event_id: Mapped[str] = mapped_column(String(256), primary_key=True)
    delivery_id: Mapped[str | None] = mapped_column(String(256))
    scheme: Mapped[str] = mapped_column(String(16))  # which signature scheme verified it
    external_id: Mapped[str | None] = mapped_column(String(256))
    outcome: Mapped[str] = mapped_column(String(32))
    received_at: Mapped[datetime]


class AlertState(Base):
    """When each kind of alert was last sent, and what it reported then.

    Shared by every beat and every `doctor`/CLI run, so an alert is rate-limited
    across processes and machines, not per process.
    """

    __tablename__ = "alert_state"

    kind: Mapped[str] = mapped_column(String(32), primary_key=True)
    last_sent_at: Mapped[datetime | None]
    last_value: Mapped[int] = mapped_column(Integer, server_default="0")
    updated_at: Mapped[datetime]


class SchedulerHeartbeat(Base):
    """One row per beat process (`host:pid`): when it last ticked, and when a worker
    last ran a dispatch sweep it sent.

    Every timestamp comes from the database's clock (`now()`), never a host's, so
    ages agree whichever machine reads them. Two beats by mistake are two rows;
    what counts is the newest of each column.
    """

    __tablename__ = "scheduler_heartbeats"

    instance: Mapped[str] = mapped_column(String(255), primary_key=True)
    started_at: Mapped[datetime]
    last_tick_at: Mapped[datetime]
    # NULL until a worker has run one of this beat's sweeps.
    last_dispatch_at: Mapped[datetime | None]

"""SQLAlchemy models: the tracking queue and both vendors' normalized archives."""

from models.base import Base, metadata, utcnow
from models.catalog import (
    AliasKind,
    AnswerLabel,
    BrandName,
    CatalogAlias,
    CatalogBrand,
    CatalogDomain,
    DomainCategory,
    LabelScope,
)
from models.mentionlab import JobExecution, JobExecutionEntity, JobExecutionSource
from models.mentionsapi import Ask, AskBrandMention, AskCitation, AskProviderResponse
from models.operations import AlertState, SchedulerHeartbeat, WebhookDelivery
from models.quarantine import QuarantinedPayload
from models.tracking import (
    ACTIVE_STATES,
    FINAL_STATES,
    SAVABLE_STATES,
    TrackedId,
    TrackedState,
    Vendor,
    VendorAccount,
)

__all__ = [
    "ACTIVE_STATES",
    "FINAL_STATES",
    "SAVABLE_STATES",
    "AlertState",
    "AliasKind",
    "AnswerLabel",
    "Ask",
    "AskBrandMention",
    "AskCitation",
    "AskProviderResponse",
    "Base",
    "BrandName",
    "CatalogAlias",
    "CatalogBrand",
    "CatalogDomain",
    "DomainCategory",
    "JobExecution",
    "JobExecutionEntity",
    "JobExecutionSource",
    "LabelScope",
    "QuarantinedPayload",
    "SchedulerHeartbeat",
    "TrackedId",
    "TrackedState",
    "Vendor",
    "VendorAccount",
    "WebhookDelivery",
    "metadata",
    "utcnow",
]

"""Results the CLI and API print: batch submission and pipeline status."""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, ConfigDict


class RequestState(StrEnum):
    """A request's states, in pipeline order, then the ones off the path."""

    received = "received"
    validated = "validated"
    key_generated = "key_generated"
    signed = "signed"
    packaged = "packaged"
    awaiting_activation = "awaiting_activation"
    activated = "activated"
    published = "published"
    rejected = "rejected"
    failed = "failed"
    revoked = "revoked"


class Rejection(BaseModel):
    """Why a row was refused: a stable code, the record field at fault, a message."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    code: str
    field: str | None
    message: str


class BatchSubmitted(BaseModel):
    """What ``certfactory submit --json`` prints."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    batch_id: str
    accepted: int
    rejected: int
    duplicates: int


class StatusReport(BaseModel):
    """What ``certfactory status --json`` prints: every state present, zero or not."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    batch_id: str | None
    states: dict[RequestState, int]
    total: int

"""Results the CLI and API print: batch submission and pipeline status."""

from __future__ import annotations

import datetime as dt
from enum import StrEnum
from typing import Literal

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


class RowReport(BaseModel):
    """What became of one row of a batch: ``reasons`` name the request-record field at fault."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    row: int
    request_ref: str | None
    status: Literal["accepted", "rejected", "duplicate"]
    reasons: list[Rejection]


class BatchSubmitted(BaseModel):
    """What ``certfactory submit --json`` prints: counts, every row, the warnings apart."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    batch_id: str
    accepted: int
    rejected: int
    duplicates: int
    rows: list[RowReport]
    warnings: list[str]


class DeadlineStanding(BaseModel):
    """Open requests owing one deadline (``ready``: 3 working days; ``publish``: 1)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    open: int
    at_risk: int
    breached: int
    next_due: dt.date | None


class FailedRequest(BaseModel):
    """A request that exhausted its retries, and why."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    request_id: str
    request_ref: str
    reason_code: str | None
    reason: str | None


class DeadLetter(BaseModel):
    """A message dramatiq gave up on and parked in its queue's dead-letter set."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    queue: str
    actor: str
    request_id: str | None
    dead_at: dt.datetime


class StatusReport(BaseModel):
    """What ``certfactory status --json`` prints: every state present, zero or not."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    batch_id: str | None
    states: dict[RequestState, int]
    total: int
    deadlines: dict[str, DeadlineStanding]
    failed: list[FailedRequest]
    dead_letters: dict[str, int] | None = None
    dead_letter_messages: list[DeadLetter] = []

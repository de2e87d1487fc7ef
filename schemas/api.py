"""What the HTTP API takes and answers (its OpenAPI document is generated from these)."""

from __future__ import annotations

import datetime as dt
from enum import StrEnum
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, Strict, StrictBool, field_validator

from schemas.status import Rejection, RequestState


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class RevocationReason(StrEnum):
    """RFC 5280 CRLReason names a revocation may give (certificateHold is the pipeline's own)."""

    unspecified = "unspecified"
    keyCompromise = "keyCompromise"
    cACompromise = "cACompromise"
    affiliationChanged = "affiliationChanged"
    superseded = "superseded"
    cessationOfOperation = "cessationOfOperation"
    privilegeWithdrawn = "privilegeWithdrawn"
    aACompromise = "aACompromise"


class ErrorMessage(_Model):
    """Every refusal and error: a message for people, never a traceback."""

    detail: str


class RowReport(_Model):
    """What became of one row of a submitted batch."""

    row: int
    request_ref: str | None
    status: str = Field(description="accepted | rejected | duplicate")
    reasons: list[Rejection]


class BatchReport(_Model):
    """The answer to a batch upload: counts and every row's outcome."""

    batch_id: str
    accepted: int
    rejected: int
    duplicates: int
    rows: list[RowReport]
    warnings: list[str] = Field(default_factory=list, description="Per budget unit: missing mandatory signatories")


class BatchStatus(_Model):
    """A batch and its requests per state (every state present)."""

    batch_id: str
    agency_code: str
    source: str
    submitted_at: dt.datetime
    rows: int
    accepted: int
    rejected: int
    duplicates: int
    states: dict[RequestState, int]
    total: int


class CertificateStatus(_Model):
    """A request's certificate: hold (signed, not yet published), published or revoked."""

    serial: str
    status: str = Field(description="issuing | hold | published | revoked")
    not_before: dt.datetime | None
    not_after: dt.datetime | None
    published_at: dt.datetime | None
    revocation_reason: str | None = None
    revoked_at: dt.datetime | None = None


class RequestStatus(_Model):
    """One request: where it stands, why it stopped, its deadlines and certificate."""

    request_id: str
    batch_id: str
    agency_code: str
    request_ref: str
    full_name: str | None
    state: RequestState
    reason_code: str | None
    reasons: list[Rejection]
    device_serial: str | None
    received_at: dt.datetime
    ready_deadline: dt.date | None
    publish_deadline: dt.date | None
    activation_requested_at: dt.datetime | None
    effective_at: dt.datetime | None
    certificate: CertificateStatus | None


class ActivationRequest(_Model):
    """The agency handed the device over; the certificate takes effect now or at ``effective_at``."""

    effective_at: dt.datetime | None = Field(default=None, description="ISO 8601; without an offset: UTC")

    @field_validator("effective_at", mode="before")
    @classmethod
    def _iso_text_only(cls, value: Any) -> Any:
        # Lax parsing would read 0 or true as a time; the contract is an ISO 8601 string.
        if value is not None and not isinstance(value, (str, dt.datetime)):
            raise ValueError("effective_at must be an ISO 8601 date-time string")
        return value


class ActivationResult(_Model):
    """Whether this call activated the request (asked again: false, harmlessly) and its state."""

    request_id: str
    activated: bool
    state: RequestState


class RevocationRequest(_Model):
    """Why a certificate is revoked (RFC 5280 reason) and, optionally, a note for the audit trail."""

    reason: RevocationReason
    detail: str | None = Field(default=None, max_length=500)


class RevocationResult(_Model):
    """The revocation as recorded; ``already`` when an earlier call made it."""

    serial: str
    request_id: str
    reason: str
    revoked_at: dt.datetime
    revoked_by: str
    already: bool


class RetryRequest(_Model):
    """Failed requests to send back in: these ids, or every failed one."""

    request_ids: list[Annotated[str, Field(pattern=r"^[0-9a-f]{32}$")]] = Field(default_factory=list, max_length=1000)
    all_failed: StrictBool = False


class ReconcileRequest(_Model):
    """Resume requests in flight that have not moved for this many seconds."""

    older_than_seconds: Annotated[float, Strict()] = Field(default=60.0, ge=0, le=30 * 86400)


class Resumed(_Model):
    """One request sent on: from which state, to which stage (none: it parks)."""

    request_id: str
    state: RequestState
    stage: str | None


class Resumptions(_Model):
    """What an operator action sent on."""

    resumed: list[Resumed]


class PublishedCertificate(_Model):
    """One entry of the public repository's index."""

    serial: str
    full_name: str
    organization: str
    agency_code: str
    not_before: str | None
    not_after: str | None
    published_at: str | None
    der: str
    pem: str


class SearchResults(_Model):
    """Published certificates matching a search (name without diacritics, agency, CCCD hash)."""

    query: str
    count: int
    results: list[PublishedCertificate]

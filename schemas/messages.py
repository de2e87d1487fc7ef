"""Queue messages: ids only, never payloads (the ledger is the truth)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class StageMessage(BaseModel):
    """What every stage actor receives: the id of the request to move on."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    request_id: str = Field(min_length=32, max_length=32, pattern=r"^[0-9a-f]{32}$")

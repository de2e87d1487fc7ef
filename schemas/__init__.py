"""Pydantic models for every message and record that crosses a boundary.

This package imports nothing of ours; the committed JSON Schema files under
``schemas/json/`` are generated from these models and checked against them by a test.
"""

from schemas.request import KeyType, RequestRecord, Role, Sex
from schemas.messages import StageMessage
from schemas.status import BatchSubmitted, Rejection, StatusReport, RequestState

__all__ = [
    "BatchSubmitted",
    "KeyType",
    "Rejection",
    "RequestRecord",
    "RequestState",
    "Role",
    "Sex",
    "StageMessage",
    "StatusReport",
]

"""Submitting as an agency would, for the demo, the load test and the chaos harness.

Stub until the intake work (issue 3) lands: it will register the agency with a head key
held under $CERTFACTORY_HOME and sign the exact batch bytes before submitting."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from certfactory import operations
from certfactory.settings import Settings
from factory.ledger import Ledger


def submit_endorsed(settings: Settings, ledger: Ledger, file: Path, agency_code: str) -> dict[str, Any]:
    """Submits FILE for AGENCY_CODE, endorsed by that agency's head."""
    return operations.submit(settings, ledger, file, agency_code)

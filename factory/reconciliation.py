"""Reconciliation: finding where each unfinished request really stands and resuming it.

The ledger's durable facts (a device with a public key, a certificate row with its DER,
a packaged device, a pick-up notice, an activation time) say how far a request got, even
when a crash or a lost message left its state behind. Resuming never issues anew: each
stage finds the work already done (the key by its CKA_ID, the certificate row by the
request) and only moves the state on.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

from factory.errors import StateConflict
from factory.ledger import Ledger
from schemas.status import RequestState as S

# The stage that moves a request out of each in-flight state.
NEXT_STAGE: dict[S, str] = {
    S.received: "validate",
    S.validated: "generate_key",
    S.key_generated: "sign",
    S.signed: "package",
    S.packaged: "await_activation",
    S.activated: "publish",
}


@dataclass(frozen=True)
class Resumption:
    """One request to send on: which stage, from which state."""

    request_id: str
    state: S
    stage: str | None  # None: the request parks (awaiting activation), nothing to send


def furthest_state(ledger: Ledger, request_id: str) -> S:
    """The state a request's durable facts prove it reached (for a request in `failed`)."""
    request = ledger.get_request(request_id)
    assert request is not None
    if request.activation_requested_at is not None:
        return S.activated
    if ledger.outbox_for(request_id):
        return S.awaiting_activation
    device = ledger.device_for_request(request_id)
    certificate = ledger.certificate_for_request(request_id)
    if device is not None and device.state == "packaged":
        return S.packaged
    if certificate is not None and certificate.der is not None:
        return S.signed
    if device is not None and device.public_key is not None:
        return S.key_generated
    if request.ready_deadline is not None:
        return S.validated
    return S.received


def retry_failed(ledger: Ledger, request_id: str) -> Resumption | None:
    """Move a `failed` request back to the state its facts prove and say what to send.
    None when it is not failed (nothing to do)."""
    request = ledger.get_request(request_id)
    if request is None or request.state != S.failed.value:
        return None
    state = furthest_state(ledger, request_id)
    try:
        ledger.transition(request_id, S.failed, state, reason_code=None, reason=None, detail={"retry": True})
    except StateConflict:
        return None
    return Resumption(request_id, state, NEXT_STAGE.get(state))


def stalled(ledger: Ledger, older_than_seconds: float, pending: Collection[str] = ()) -> list[Resumption]:
    """Requests in flight whose state has not moved for ``older_than_seconds`` and that
    have no message in the broker (``pending``): their next message was lost, so send it
    again. Skipping the pending ones keeps a backlog from being sent twice (harmless, but
    every duplicate would run through the rest of the pipeline)."""
    return [Resumption(row.id, S(row.state), NEXT_STAGE[S(row.state)])
            for row in ledger.unmoved_requests(tuple(NEXT_STAGE), older_than_seconds) if row.id not in pending]

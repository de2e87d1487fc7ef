"""The HTTP API (FastAPI; ``certfactory serve`` runs it on uvicorn). OpenAPI at /openapi.json.

Agencies authenticate with their API key (``Authorization: Bearer <key>``), or over
mutual TLS with their head's registered certificate, and see,
submit, activate and revoke only their own requests; operators' keys act for all and
may retry and reconcile. A refused call is 401 or 403 with the reason and an audit
event. Each caller has a token bucket (in this process's memory: with several server
processes each enforces its own) answering 429 with Retry-After. Errors are JSON
``{"detail": …}`` messages, never tracebacks.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
import math
import re
import ssl
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis
from fastapi import Depends, FastAPI, File, HTTPException, Request, Security, UploadFile
from fastapi import Path as PathParam
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy import select

from certfactory import operations, site, wiring
from certfactory.ratelimit import RateLimits, TokenBuckets
from certfactory.settings import Settings
from factory import access, revocation
from factory.access import Principal
from factory.errors import CertFactoryError, ConfigurationError, NotFound, StateConflict, TransientError
from factory.ledger import Ledger
from factory.tables import batches
from schemas import api as m
from schemas.status import Rejection, RequestState

log = logging.getLogger(__name__)
MAX_UPLOAD_BYTES = 20 * 1024 * 1024
MAX_SIGNATURE_BYTES = 64 * 1024
_ID = r"^[0-9a-f]{32}$"


def _error(description: str) -> dict[str, Any]:
    return {"model": m.ErrorMessage, "description": description}


_REFUSALS: dict[int | str, dict[str, Any]] = {
    400: _error("Malformed body, input the domain refuses, or a batch not endorsed by the agency's registered "
                "head (the message says which)"),
    401: _error("No API key, or an unknown or withdrawn one"),
    403: _error("The key's agency may not act on this resource"),
    429: {**_error("Rate limit exceeded"), "headers": {"Retry-After": {
        "description": "Seconds to wait", "schema": {"type": "integer"}}}},
    503: _error("The broker or the CA is not reachable; try again later"),
}


def _responses(*extra: tuple[int, str]) -> dict[int | str, dict[str, Any]]:
    return {**_REFUSALS, **{code: _error(text) for code, text in extra}}


def _status_of(error: CertFactoryError) -> int:
    if isinstance(error, (ConfigurationError, TransientError)):
        return 503
    if isinstance(error, NotFound):
        return 404
    if isinstance(error, (StateConflict, revocation.RevocationRefused)):
        return 409
    return 400


def create_app(settings: Settings, *, limits: RateLimits = RateLimits(),
               on_revocation: Callable[[], None] | None = None,
               clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC)) -> FastAPI:
    """The API over the ledger these settings name (opened at first use). ``on_revocation``
    is called after each new revocation: wire it to regenerate the CRL on the CA host."""
    app = FastAPI(title="certfactory", version="1", description=__doc__)
    buckets, bearer = TokenBuckets(limits), HTTPBearer(auto_error=False, description="The API key")
    strangers = TokenBuckets(limits)  # unauthenticated calls, per client address
    opened: list[Ledger] = []
    opening = threading.Lock()

    def ledger() -> Ledger:
        with opening:
            if not opened:
                opened.append(wiring.ledger(settings))
                access.ensure_tables(opened[0])
                revocation.ensure_tables(opened[0])
            return opened[0]

    app.state.ledger = ledger  # for whoever composes the app (the /metrics exporter)

    def refuse(request: Request, status: int, reason: str, principal: Principal | None = None) -> HTTPException:
        if status == 401:  # no caller to rate-limit yet: limit the refusals (each is a ledger write) per address
            wait = strangers.take(f"address:{request.client.host if request.client else '?'}")
            if wait:
                return _too_many(f"too many unauthenticated calls from this address ({reason})", wait)
        with ledger().transaction() as connection:
            ledger().audit(connection, "access_refused", detail={
                "status": status, "reason": reason, "method": request.method, "path": request.url.path,
                "caller": principal.name if principal else None, "key_id": principal.key_id if principal else None,
                "client": request.client.host if request.client else None})
        headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
        return HTTPException(status, reason, headers=headers)

    def caller(request: Request, credentials: HTTPAuthorizationCredentials | None = Security(bearer)) -> Principal:
        certificate = _client_certificate(request)
        if credentials is None and certificate is None:
            raise refuse(request, 401, "missing API key: send the header Authorization: Bearer <key>")
        if credentials is not None:
            principal = access.authenticate(ledger(), credentials.credentials)
            if principal is None:
                raise refuse(request, 401, "the API key is unknown or withdrawn")
        else:
            assert certificate is not None
            principal = access.authenticate_certificate(ledger(), certificate)
            if principal is None:
                raise refuse(request, 401, "the client certificate is no registered agency head's certificate: "
                                           "register it with `certfactory agencies import`, or send an API key")
        wait = buckets.take(principal.name)
        if wait:
            raise _too_many(f"rate limit for {principal.name} exceeded ({limits.per_second:g} calls/s, "
                            f"bursts of {limits.burst}); retry later", wait)
        return principal

    def owned(request: Request, principal: Principal, agency_code: str, what: str) -> None:
        if not principal.may_act_for(agency_code):
            raise refuse(request, 403, f"{what} belongs to another agency; the key of {principal.name} may act "
                                       "only on its own agency's requests", principal)

    def operator(request: Request, principal: Principal = Depends(caller)) -> Principal:
        if not principal.is_operator:
            raise refuse(request, 403, "operator action: an agency's key may not call it", principal)
        return principal

    @app.exception_handler(CertFactoryError)
    async def _domain_error(_: Request, error: CertFactoryError) -> JSONResponse:
        status = _status_of(error)
        return JSONResponse({"detail": error.diagnostics()}, status, {"Retry-After": "5"} if status == 503 else None)

    @app.exception_handler(redis.RedisError)
    async def _broker_error(_: Request, error: Exception) -> JSONResponse:
        return JSONResponse({"detail": f"the broker is unreachable ({type(error).__name__}); try again later"}, 503,
                            {"Retry-After": "5"})

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, error: Exception) -> JSONResponse:
        log.exception("unexpected error in %s %s", request.method, request.url.path)
        return JSONResponse({"detail": "internal error, logged on the server; every call here is safe to repeat"},
                            500)

    @app.post("/batches", status_code=202, response_model=m.BatchReport, tags=["agencies"],
              responses=_responses((413, "The file or its signature is too large")))
    def submit_batch(request: Request, file: UploadFile = File(description="The batch: JSON lines, CSV or xlsx"),
                     signature: UploadFile = File(description=(
                         "The endorsement: a detached CMS signature (.p7s, DER or PEM) over the batch file's "
                         "exact bytes by the agency's registered head")),
                     principal: Principal = Depends(caller)) -> m.BatchReport:
        """Upload a batch of request records with its endorsement; good rows are queued for
        issuance. The file is read as JSON lines unless its name ends in .csv or .xlsx."""
        if principal.agency_code is None:
            raise refuse(request, 403, "an agency files its own batches with its key; operators file with "
                                       "`certfactory submit --agency` on the CA host", principal)
        name = re.sub(r"[^\w.-]", "_", Path(file.filename or "batch").name)[:100]
        if Path(name).suffix.lower() not in (".jsonl", ".csv", ".xlsx"):
            name += ".jsonl"
        data = file.file.read(MAX_UPLOAD_BYTES + 1)
        if len(data) > MAX_UPLOAD_BYTES:
            raise HTTPException(413, f"the batch is over {MAX_UPLOAD_BYTES // 2**20} MiB: split it")
        signed = signature.file.read(MAX_SIGNATURE_BYTES + 1)
        if len(signed) > MAX_SIGNATURE_BYTES:
            raise HTTPException(413, f"the signature is over {MAX_SIGNATURE_BYTES // 2**10} KiB")
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / name
            path.write_bytes(data)
            report = operations.submit(settings, ledger(), path, principal.agency_code, signature=signed)
        return m.BatchReport(batch_id=report["batch_id"], accepted=report["accepted"], rejected=report["rejected"],
                             duplicates=report["duplicates"], rows=report["rows"], warnings=report["warnings"])

    @app.get("/batches/{batch_id}", response_model=m.BatchStatus, tags=["agencies"],
             responses=_responses((404, "No such batch")))
    def batch_status(request: Request, batch_id: str = PathParam(pattern=_ID),
                     principal: Principal = Depends(caller)) -> m.BatchStatus:
        """A batch and its requests per state."""
        with ledger().engine.connect() as connection:
            row = connection.execute(select(batches).where(batches.c.id == batch_id)).first()
        if row is None:
            raise HTTPException(404, f"no batch {batch_id}")
        owned(request, principal, row.agency_code, f"batch {batch_id}")
        report = operations.status(ledger(), batch_id)
        return m.BatchStatus(batch_id=row.id, agency_code=row.agency_code, source=row.source,
                             submitted_at=_utc(row.submitted_at), rows=row.rows, accepted=row.accepted,
                             rejected=row.rejected, duplicates=row.duplicates, states=report["states"],
                             total=report["total"])

    def request_row(request: Request, request_id: str, principal: Principal) -> Any:
        row = ledger().get_request(request_id)
        if row is None:
            raise HTTPException(404, f"no request {request_id}")
        owned(request, principal, row.agency_code, f"request {request_id}")
        return row

    @app.get("/requests/{request_id}", response_model=m.RequestStatus, tags=["agencies"],
             responses=_responses((404, "No such request")))
    def request_status(request: Request, request_id: str = PathParam(pattern=_ID),
                       principal: Principal = Depends(caller)) -> m.RequestStatus:
        """One request: state, reasons, deadlines and certificate status."""
        row = request_row(request, request_id, principal)
        return _request_status(ledger(), row)

    @app.post("/requests/{request_id}/activation", response_model=m.ActivationResult, tags=["agencies"],
              responses=_responses((404, "No such request"), (409, "Not awaiting activation")))
    def activate(request: Request, body: m.ActivationRequest | None = None,
                 request_id: str = PathParam(pattern=_ID),
                 principal: Principal = Depends(caller)) -> m.ActivationResult:
        """The device was handed over: publish the certificate now or at ``effective_at`` (idempotent)."""
        row = request_row(request, request_id, principal)
        done = (RequestState.activated.value, RequestState.published.value)
        if row.state not in (RequestState.awaiting_activation.value, *done):
            raise HTTPException(409, f"request {request_id} is {row.state}, not awaiting activation")
        effective_at = body.effective_at if body else None
        if effective_at is not None and effective_at.tzinfo is None:
            effective_at = effective_at.replace(tzinfo=dt.UTC)
        if effective_at is not None and effective_at > clock() + dt.timedelta(days=366):
            raise HTTPException(400, "effective_at is more than a year ahead")
        activated = bool(row.state not in done and operations.activate(settings, [request_id], effective_at))
        state = ledger().get_request(request_id).state  # type: ignore[union-attr]
        return m.ActivationResult(request_id=request_id, activated=activated, state=state)

    @app.post("/certificates/{serial}/revocation", response_model=m.RevocationResult, tags=["agencies"],
              responses=_responses((404, "No such certificate"), (409, "The certificate is not signed")))
    def revoke(request: Request, body: m.RevocationRequest,
               serial: str = PathParam(pattern=r"^[0-9a-fA-F]{1,40}$", description="Serial in hex"),
               principal: Principal = Depends(caller)) -> m.RevocationResult:
        """Revoke a certificate with an RFC 5280 reason (idempotent); the CRL follows."""
        certificate = ledger().certificate_for_serial(revocation.normalise_serial(serial))
        if certificate is None:
            raise HTTPException(404, f"no certificate with serial {serial}")
        row = request_row(request, certificate.request_id, principal)
        done = revocation.revoke(ledger(), certificate.serial, body.reason.value,
                                 f"{principal.name} (key {principal.key_id})", clock(), body.detail)
        if on_revocation is not None and not done.already:
            on_revocation()
        log.info("certificate %s of request %s revoked (%s)", done.serial, row.id, done.reason)
        return m.RevocationResult(**dataclasses.asdict(done))

    @app.post("/operator/retry", response_model=m.Resumptions, tags=["operators"], responses=_responses())
    def retry(body: m.RetryRequest, _: Principal = Depends(operator)) -> m.Resumptions:
        """Send failed requests back in from where their durable facts say they got."""
        wiring.redis_url(settings)  # no broker: refuse before moving anything
        ids = ledger().request_ids(state=RequestState.failed) if body.all_failed else body.request_ids
        return _resumptions(operations.retry(settings, ledger(), ids))

    @app.post("/operator/reconcile", response_model=m.Resumptions, tags=["operators"], responses=_responses())
    def reconcile(body: m.ReconcileRequest, _: Principal = Depends(operator)) -> m.Resumptions:
        """Resend the next message of every request in flight that stood still too long."""
        wiring.redis_url(settings)
        return _resumptions(operations.reconcile(settings, ledger(), body.older_than_seconds))

    app.include_router(site.router(wiring.home(settings).repository))
    return app


def _too_many(message: str, wait: float) -> HTTPException:
    return HTTPException(429, message, {"Retry-After": str(math.ceil(wait))})


def _client_certificate(request: Request) -> bytes | None:
    """The DER of the client certificate the TLS layer verified (ASGI TLS extension), or None."""
    chain = request.scope.get("extensions", {}).get("tls", {}).get("client_cert_chain")
    return ssl.PEM_cert_to_DER_cert(chain[0]) if chain else None


def _utc(at: Any) -> Any:
    """SQLite hands datetimes back naive: they are UTC."""
    return at.replace(tzinfo=dt.UTC) if isinstance(at, dt.datetime) and at.tzinfo is None else at


def _resumptions(resumed: list[Any]) -> m.Resumptions:
    return m.Resumptions(resumed=[m.Resumed(request_id=r.request_id, state=r.state, stage=r.stage) for r in resumed])


def _reasons(text: str | None) -> list[Rejection]:
    try:
        return [Rejection.model_validate(item) for item in json.loads(text or "[]")]
    except (ValueError, TypeError):
        return [Rejection(code="unknown", field=None, message=str(text))]


def _request_status(ledger: Ledger, row: Any) -> m.RequestStatus:
    try:
        record = json.loads(row.record)
    except ValueError:
        record = {}
    certificate = ledger.certificate_for_request(row.id)
    status = None
    if certificate is not None:
        revoked = revocation.revocation_for(ledger, certificate.serial)
        status = m.CertificateStatus(
            serial=certificate.serial, status=certificate.status, not_before=_utc(certificate.not_before),
            not_after=_utc(certificate.not_after), published_at=_utc(certificate.published_at),
            revocation_reason=revoked.reason if revoked else None, revoked_at=revoked.revoked_at if revoked else None)
    name = record.get("full_name") if isinstance(record, dict) else None
    return m.RequestStatus(
        request_id=row.id, batch_id=row.batch_id, agency_code=row.agency_code, request_ref=row.request_ref,
        full_name=name if isinstance(name, str) else None, state=row.state, reason_code=row.reason_code,
        reasons=_reasons(row.reason), device_serial=row.device_serial, received_at=_utc(row.received_at),
        ready_deadline=row.ready_deadline, publish_deadline=row.publish_deadline,
        activation_requested_at=_utc(row.activation_requested_at), effective_at=_utc(row.effective_at),
        certificate=status)

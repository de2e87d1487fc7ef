"""The stage actors. Each receives a request id, asks ``factory.issuance`` to do the
stage, and sends the next stage's message when the request moves on.

Permanent errors park the request in `failed` at once; anything else is retried with a
short backoff, and exhausted retries land in `failed` with the reason
(``record_exhausted``). Import this module only after ``workers.broker.connect``.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from collections.abc import Callable
from typing import Any

import dramatiq

from factory.errors import PermanentError
from factory.issuance import Issuance, NotYet
from schemas.messages import StageMessage
from workers.broker import FAILURE_QUEUE

log = logging.getLogger("certfactory.workers")

_provider: Callable[[], Issuance] | None = None
_issuance: Issuance | None = None
_lock = threading.Lock()

RETRIES = {"max_retries": 8, "min_backoff": 500, "max_backoff": 30_000,
           "on_retry_exhausted": "record_exhausted", "throws": (PermanentError,)}


def install(provider: Callable[[], Issuance]) -> None:
    """Tell the actors how this process builds its Issuance (done by the wiring)."""
    global _provider, _issuance
    _provider, _issuance = provider, None


def issuance() -> Issuance:
    """This process's Issuance, built on first use (token sessions open once per process)."""
    global _issuance
    with _lock:
        if _issuance is None:
            if _provider is None:
                raise RuntimeError("workers.actors.install() was not called")
            _issuance = _provider()
        return _issuance


def _run(stage: str, request_id: str, following: dramatiq.Actor[Any, Any] | None) -> None:
    message = StageMessage(request_id=request_id)
    try:
        proceed = getattr(issuance(), stage)(message.request_id)
    except NotYet as wait:  # a later effective time: come back then, not through retries
        delay_ms = max(0, int((wait.at - dt.datetime.now(dt.UTC)).total_seconds() * 1000))
        STAGES[stage].send_with_options(args=(request_id,), delay=delay_ms)
        return
    except PermanentError as error:
        log.warning("request %s failed at %s: %s", request_id, stage, error.diagnostics())
        issuance().fail(request_id, f"{stage}.{error.code}", error.diagnostics())
        raise
    if proceed and following is not None:
        following.send(message.request_id)


INDEX_REFRESH_MS = 1000
_INDEX_REFRESH_KEY = "certfactory:index-refresh"


@dramatiq.actor(queue_name="publish", max_retries=3)
def refresh_index() -> None:
    """Rewrite the repository index from the ledger."""
    issuance().refresh_index()


CRL_REFRESH_MS = 5000
_CRL_REFRESH_KEY = "certfactory:crl-refresh"


@dramatiq.actor(queue_name="sign", max_retries=3)
def refresh_crl() -> None:
    """Sign and write a fresh CRL on the CA host (the sign queue's pool holds the CA token)."""
    issuance().refresh_crl()


def crl_changed() -> None:
    """A certificate went on hold or was released: a fresh CRL within CRL_REFRESH_MS.
    A CRL costs O(held + revoked), so one per interval at most, never one per certificate;
    sent after the change committed, so the CRL it makes always includes it."""
    client = getattr(dramatiq.get_broker(), "client", None)
    if client is None or client.set(_CRL_REFRESH_KEY, 1, nx=True, px=CRL_REFRESH_MS):
        refresh_crl.send_with_options(delay=CRL_REFRESH_MS)


@dramatiq.actor(queue_name="publish", **RETRIES)
def publish(request_id: str) -> None:
    """activated → published; the repository index and the CRL (hold released) follow."""
    _run("publish", request_id, None)
    crl_changed()
    # Rewriting index.json costs O(published): once a second at most, never skipped. The
    # refresh runs after this publication committed, so it always includes it.
    client = getattr(dramatiq.get_broker(), "client", None)
    if client is None or client.set(_INDEX_REFRESH_KEY, 1, nx=True, px=INDEX_REFRESH_MS):
        refresh_index.send_with_options(delay=INDEX_REFRESH_MS)


@dramatiq.actor(queue_name="await_activation", **RETRIES)
def await_activation(request_id: str) -> None:
    """packaged → awaiting_activation; the request parks until activated."""
    _run("await_activation", request_id, None)


@dramatiq.actor(queue_name="package", **RETRIES)
def package(request_id: str) -> None:
    """signed → packaged."""
    _run("package", request_id, await_activation)


@dramatiq.actor(queue_name="sign", **RETRIES)
def sign(request_id: str) -> None:
    """key_generated → signed (on hold: the CRL lists it within CRL_REFRESH_MS)."""
    _run("sign", request_id, package)
    crl_changed()


@dramatiq.actor(queue_name="generate_key", **RETRIES)
def generate_key(request_id: str) -> None:
    """validated → key_generated."""
    _run("generate_key", request_id, sign)


@dramatiq.actor(queue_name="validate", **RETRIES)
def validate(request_id: str) -> None:
    """received → validated | rejected."""
    _run("validate", request_id, generate_key)


@dramatiq.actor(queue_name=FAILURE_QUEUE, max_retries=20)
def record_exhausted(message_data: dict[str, Any], retry_info: dict[str, Any]) -> None:
    """A stage gave up after its retries: the request goes to `failed` with the reason."""
    request_id = message_data["args"][0]
    stage = message_data["actor_name"]
    reason = f"{stage}: retries exhausted after {retry_info.get('retries')} attempts"
    issuance().fail(request_id, f"{stage}.exhausted", reason)


STAGES = {"validate": validate, "generate_key": generate_key, "sign": sign, "package": package,
          "await_activation": await_activation, "publish": publish}

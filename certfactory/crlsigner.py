"""The CRL signed from a process of the CA host: after `certfactory revoke`, and on the
schedule `certfactory serve` keeps. (The workers' debounced ``refresh_crl`` actor covers
certificates going on hold and being released.)

The issuing key stays on the CA token: this process logs in to it like the CA worker
pool does, with the CA's SOFTHSM2_CONF. A host without the CA (no CA certificate under
``$CERTFACTORY_HOME/ca``) asks the CA pool through the broker instead.
"""

from __future__ import annotations

import logging
import os
import threading
from typing import Any

import redis

from certfactory import wiring
from certfactory.messaging import actors_for
from certfactory.settings import Settings
from factory.errors import CertFactoryError, ConfigurationError
from factory.issuance import Issuance

log = logging.getLogger(__name__)


def _ca_issuance(settings: Settings) -> Issuance:
    # SoftHSM2 reads SOFTHSM2_CONF when the module is first loaded: before any token call.
    os.environ.update(wiring.softhsm_env(settings, "ca"))
    return wiring.issuance(settings, "ca")


def _ask_the_pools(settings: Settings) -> None:
    actors = actors_for(wiring.redis_url(settings))
    actors.refresh_crl.send()
    actors.refresh_index.send()


def issue_crl(settings: Settings) -> dict[str, Any]:
    """Sign and write a fresh CRL now, on this host's CA token, and the repository's index
    (revoked certificates leave it); else ask the pools (then the summary says
    ``{"sent_to": "sign"}``). Raises when neither is possible."""
    try:
        issuance = _ca_issuance(settings)
    except ConfigurationError:
        _ask_the_pools(settings)
        return {"sent_to": "sign"}
    try:
        issuance.refresh_index()  # a revoked certificate leaves the search (before the CRL says so)
        return issuance.refresh_crl()
    finally:
        assert issuance.ca_token is not None
        issuance.ca_token.close()
        issuance.ledger.close()


class CRLSchedule:
    """A thread re-signing the CRL (and rewriting the index) every ``interval`` seconds,
    and at once after ``poke()``.

    Keeps one CA token session for the life of the process (login is per process)."""

    def __init__(self, settings: Settings, interval: float) -> None:
        self.settings = settings
        self.interval = interval
        self.issued = 0
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="crl-schedule", daemon=True)
        self._issuance: Issuance | None = None

    def start(self) -> CRLSchedule:
        """Issue a first CRL at once, then keep to the schedule."""
        self._thread.start()
        return self

    def poke(self) -> None:
        """Something changed (a revocation): re-sign now rather than at the next tick."""
        self._wake.set()

    def stop(self) -> None:
        """End the thread and log out of the CA token."""
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=30)
        if self._issuance is not None and self._issuance.ca_token is not None:
            self._issuance.ca_token.close()

    def _once(self) -> None:
        if self._issuance is None:
            try:
                self._issuance = _ca_issuance(self.settings)
            except ConfigurationError:
                _ask_the_pools(self.settings)
                log.info("no CA on this host: asked the CA pool for a fresh CRL")
                return
        self._issuance.refresh_index()
        summary = self._issuance.refresh_crl()
        self.issued += 1
        log.info("CRL %s signed with %s entries", summary["crl_number"], summary["entries"])

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._once()
            except CertFactoryError as error:  # e.g. no broker, token busy: the next tick tries again
                log.warning("CRL not re-signed: %s", error.diagnostics())
            except redis.RedisError as error:
                log.warning("CRL not re-signed: the broker is unreachable (%s)", error)
            self._wake.wait(self.interval)
            self._wake.clear()

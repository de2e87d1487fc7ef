"""HTTP commands: serve (API, repository, /metrics, the CRL schedule), revoke, crl, and
the agencies' API keys (issue 7)."""

from __future__ import annotations

import datetime as dt
import getpass
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import click

from certfactory.settings import Settings
from factory.errors import CertFactoryError

if TYPE_CHECKING:  # FastAPI takes half a second to import: only `serve` needs it
    from fastapi import FastAPI


def build_app(settings: Settings, on_revocation: Callable[[], None] | None = None) -> FastAPI:
    """The API and the repository, with ``GET /metrics`` serving every metric of the host:
    the worker pools' multiprocess files, and the Redis and ledger gauges read at each scrape."""
    from fastapi.responses import Response
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

    from certfactory import wiring
    from certfactory.api import create_app
    from certfactory.ratelimit import RateLimits
    from monitoring.http import metrics_registry, redis_following

    app = create_app(settings, limits=RateLimits(per_second=settings.api_rate, burst=settings.api_burst),
                     on_revocation=on_revocation)
    registry = metrics_registry(wiring.home(settings).metrics, app.state.ledger,
                                redis_following(lambda: wiring.redis_url(settings)))

    @app.get("/metrics", include_in_schema=False)
    def metrics() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    return app


def _revoked_text(outcome: Any) -> str:
    return f"{outcome.serial} revoked ({outcome.reason}) by {outcome.revoked_by}" + \
        (" — already revoked earlier" if outcome.already else "")


def register(main: click.Group, agencies: click.Group) -> None:
    """Adds this module's commands to the ``certfactory`` group and its ``agencies`` subgroup."""
    from certfactory import wiring
    from certfactory.cli import _print, _settings

    @main.command()
    def serve() -> None:
        """Serve the HTTP API, the public repository and /metrics on CERTFACTORY_HTTP_ADDRESS,
        and re-sign the CRL every CERTFACTORY_CRL_REFRESH_SECONDS and after each revocation."""
        import logging

        import uvicorn

        from certfactory.crlsigner import CRLSchedule
        from certfactory.tls import uvicorn_options

        settings = _settings()
        host, colon, port = settings.http_address.rpartition(":")
        if not colon or not port.isdigit() or int(port) > 65535:
            raise click.ClickException(f"CERTFACTORY_HTTP_ADDRESS must be host:port, got {settings.http_address!r}")
        try:
            tls = uvicorn_options(settings)
        except ValueError as error:
            raise click.ClickException(str(error)) from None
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        schedule = CRLSchedule(settings, settings.crl_refresh_seconds).start()
        try:
            uvicorn.run(build_app(settings, on_revocation=schedule.poke), host=host.strip("[]") or "127.0.0.1",
                        port=int(port), log_level="info", timeout_graceful_shutdown=10, **tls)
        finally:
            schedule.stop()

    @main.command()
    @click.argument("serial", required=False)
    @click.option("--agency", "agency_code", help="Revoke every live certificate of this agency (merged or "
                                                  "dissolved) and stop its requests not yet signed.")
    @click.option("--reason", required=True, help="RFC 5280 reason: unspecified, keyCompromise, cACompromise, "
                                                  "affiliationChanged, superseded, cessationOfOperation, "
                                                  "privilegeWithdrawn, aACompromise.")
    @click.option("--note", help="Why, in words, for the audit trail.")
    @click.option("--by", "by", default=None, help="Who asks (default: operator:<login name>).")
    @click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
    def revoke(serial: str | None, agency_code: str | None, reason: str, note: str | None, by: str | None,
               as_json: bool) -> None:
        """Revoke the certificate SERIAL (hex, as in the repository's file names), or all of
        an agency's with --agency; then re-sign the CRL."""
        import redis

        from certfactory.crlsigner import issue_crl
        from factory import revocation

        if (serial is None) == (agency_code is None):
            raise click.UsageError("give either SERIAL or --agency CODE")
        settings = _settings()
        ledger = wiring.ledger(settings)
        who = by or f"operator:{getpass.getuser()}"
        now = dt.datetime.now(dt.UTC)
        result: dict[str, Any]
        if serial is not None:
            done = revocation.revoke(ledger, serial, reason, who, now, note)
            result, text = {**done.__dict__}, _revoked_text(done)
        else:
            assert agency_code is not None
            outcome = revocation.revoke_agency(ledger, agency_code, reason, who, now, note)
            result = {"agency_code": agency_code, "revoked": [r.__dict__ for r in outcome.revoked],
                      "stopped_requests": outcome.stopped_requests}
            text = (f"agency {agency_code}: {len(outcome.revoked)} certificate(s) revoked, "
                    f"{len(outcome.stopped_requests)} request(s) not yet signed stopped")
        ledger.close()
        try:
            result["crl"] = issue_crl(settings)
        except (CertFactoryError, redis.RedisError) as error:  # the revocation stands; say the CRL is behind
            message = error.diagnostics() if isinstance(error, CertFactoryError) else f"broker unreachable: {error}"
            result["crl"] = {"error": message}
            _print(result, as_json, f"{text}\nthe CRL was NOT re-signed: {message}; run `certfactory crl` "
                                    "on the CA host")
            sys.exit(1)
        crl = result["crl"]
        _print(result, as_json, f"{text}\n" + (f"CRL {crl['crl_number']} signed ({crl['entries']} entries)"
                                               if "crl_number" in crl else "CRL requested from the CA pool"))

    @main.command()
    @click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
    def crl(as_json: bool) -> None:
        """Sign and write a fresh CRL now (repository/crl/issuing.crl)."""
        from certfactory.crlsigner import issue_crl

        summary = issue_crl(_settings())
        _print(summary, as_json, f"CRL {summary['crl_number']} signed ({summary['entries']} entries) → "
                                 f"{summary['path']}" if "crl_number" in summary else "CRL requested from the CA pool")

    @agencies.group("key")
    def key() -> None:
        """API keys: one or more per agency, and operators' keys. Stored hashed; shown once."""

    @key.command("create")
    @click.argument("agency_code", required=False)
    @click.option("--operator", is_flag=True, help="An operator's key (acts for every agency, retry, reconcile).")
    @click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
    def key_create(agency_code: str | None, operator: bool, as_json: bool) -> None:
        """Issue an API key for AGENCY_CODE (or --operator). The key is printed once: hand it over now."""
        from factory import access
        from factory.agencies import get_agency

        if (agency_code is None) == (not operator):
            raise click.UsageError("give either AGENCY_CODE or --operator")
        ledger = wiring.ledger(_settings())
        if agency_code is not None and get_agency(ledger, agency_code) is None:
            raise click.ClickException(f"agency {agency_code!r} is not registered: import it first with "
                                       "`certfactory agencies import`")
        plaintext = access.create_api_key(ledger, agency_code, dt.datetime.now(dt.UTC))
        key_id = plaintext.split("_")[1]
        _print({"key_id": key_id, "agency_code": agency_code, "key": plaintext}, as_json,
               f"key {key_id} for {agency_code or 'operators'} (shown once, stored only hashed):\n{plaintext}")

    @key.command("list")
    @click.option("--agency", "agency_code", help="Only this agency's keys.")
    @click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
    def key_list(agency_code: str | None, as_json: bool) -> None:
        """List keys by id (never the keys themselves)."""
        from factory import access

        keys = access.list_api_keys(wiring.ledger(_settings()), agency_code)
        rows = [{"key_id": k.key_id, "agency_code": k.agency_code, "created_at": k.created_at,
                 "revoked_at": k.revoked_at} for k in keys]
        _print(rows, as_json, "\n".join(
            f"{r['key_id']}  {r['agency_code'] or '(operator)'}  created {r['created_at']}"
            + (f"  withdrawn {r['revoked_at']}" if r["revoked_at"] else "") for r in rows) or "no keys")

    @key.command("revoke")
    @click.argument("key_id")
    @click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
    def key_revoke(key_id: str, as_json: bool) -> None:
        """Withdraw the key KEY_ID: calls with it get 401 from now on."""
        from factory import access

        if not access.revoke_api_key(wiring.ledger(_settings()), key_id, dt.datetime.now(dt.UTC)):
            raise click.ClickException(f"no live key {key_id!r}: see `certfactory agencies key list`")
        _print({"key_id": key_id, "revoked": True}, as_json, f"key {key_id} withdrawn")

"""Wiring: settings in, the objects each kind of process needs out. The one place that
knows where things live under ``$CERTFACTORY_HOME``."""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from certfactory.settings import Settings
from factory import ceremony, softhsm
from factory.ca import CAToken, Policy
from factory.calendar import WorkingCalendar
from factory.devices import Station
from factory.errors import ConfigurationError
from factory.issuance import Issuance, Pickup
from factory.ledger import Ledger
from factory.publication import Repository


@dataclass(frozen=True)
class Home:
    """The layout of ``$CERTFACTORY_HOME``."""

    root: Path

    @property
    def ca(self) -> Path:
        """CA token, its PIN files and certificates."""
        return self.root / "ca"

    @property
    def ca_config(self) -> Path:
        """softhsm2.conf of the CA token."""
        return self.ca / "softhsm2.conf"

    @property
    def repository(self) -> Path:
        """The public repository."""
        return self.root / "repository"

    @property
    def run(self) -> Path:
        """Pids, ports and logs of the children an embedded run starts."""
        return self.root / "run"

    @property
    def metrics(self) -> Path:
        """prometheus-client multiprocess files of the worker pools, one folder per pool."""
        return self.run / "metrics"

    @property
    def redis_url_file(self) -> Path:
        """Where the embedded redis-server's URL is written while it runs."""
        return self.run / "redis.url"


def home(settings: Settings) -> Home:
    """The home folder of these settings."""
    return Home(settings.resolved_home)


def ledger(settings: Settings) -> Ledger:
    """The ledger named by the settings."""
    home(settings).root.mkdir(parents=True, exist_ok=True)
    return Ledger.connect(settings.ledger_url)


def redis_url(settings: Settings) -> str:
    """The broker: CERTFACTORY_REDIS_URL, else the embedded one while it runs."""
    if settings.redis_url:
        return settings.redis_url
    url_file = home(settings).redis_url_file
    if url_file.exists():
        return url_file.read_text().strip()
    raise ConfigurationError(
        "no broker: set CERTFACTORY_REDIS_URL, or run `certfactory worker` (which starts an embedded redis-server)")


def policy(settings: Settings) -> Policy:
    """The certificate policy in force."""
    return Policy(organization=settings.ca_organization, certificate_days=settings.certificate_days,
                  policy_oid=settings.policy_oid, repository_url=settings.repository_url,
                  allowed_key_types=settings.allowed_key_types)


def station(settings: Settings) -> Station:
    """This host's personalisation station."""
    return Station(settings.station, home(settings).root, settings.device_pkcs11_module, settings.station_ports,
                   storage=settings.device_storage, simulated_keygen_seconds=settings.simulated_keygen_seconds)


def ca_token(settings: Settings) -> CAToken:
    """The CA token (not opened until used)."""
    return CAToken(settings.pkcs11_module, settings.ca_token_label, settings.ca_pin_path)


def softhsm_env(settings: Settings, pool: str) -> dict[str, str]:
    """SOFTHSM2_CONF for a pool: device stations and the CA signer see different tokens
    (and run in different processes: PARTS.md)."""
    if pool == "station":
        return {"SOFTHSM2_CONF": str(station(settings).config)}
    if pool == "ca":
        return {"SOFTHSM2_CONF": str(home(settings).ca_config)}
    return {}


def issuance(settings: Settings, pool: str,
              observe: Callable[[str, str, float], None] | None = None) -> Issuance:
    """The Issuance a worker of ``pool`` needs: only the parts that pool's host holds."""
    layout = home(settings)
    files = ceremony.CAFiles(layout.ca)
    if not files.issuing.exists():
        raise ConfigurationError(f"no CA under {layout.ca}: run `certfactory init` first")
    device_station = station(settings) if pool in ("station", "all") else None
    if device_station is not None:
        device_station.prepare()
    return Issuance(
        ledger(settings), policy=policy(settings), repository=Repository(layout.repository),
        calendar=calendar(settings), pickup=Pickup(settings.pickup_address, settings.pickup_hours),
        station=device_station, ca_token=ca_token(settings) if pool in ("ca", "all") else None,
        chain=files.load(), observe=observe or (lambda *_: None),
        simulated_sign_seconds=settings.simulated_sign_seconds)


def initialise(settings: Settings) -> list[str]:
    """`certfactory init`: ledger, CA token with its keys, CA certificates. Returns what
    was created; empty when everything already existed."""
    layout = home(settings)
    created: list[str] = []
    layout.root.mkdir(parents=True, exist_ok=True)
    database_existed = settings.database_url is not None or (layout.root / "ledger.sqlite").exists()
    ledger(settings).close()
    if not database_existed:
        created.append(f"ledger {settings.ledger_url}")
    if not layout.ca_config.exists():
        softhsm.write_config(layout.ca_config, layout.ca / "tokens")
    os.environ["SOFTHSM2_CONF"] = str(layout.ca_config)  # before the module is first loaded
    token = ca_token(settings)
    if ceremony.create_ca_token(layout.ca_config, settings.ca_token_label, settings.pkcs11_module,
                                settings.ca_pin_path):
        created.append(f"CA token {settings.ca_token_label}")
    if ceremony.create_hierarchy(token, ceremony.CAFiles(layout.ca), Repository(layout.repository),
                                 settings.ca_organization, dt.datetime.now(dt.UTC)):
        created.append("root and issuing CA keys and certificates")
    token.close()
    station(settings).prepare()
    return created


def calendar(settings: Settings) -> WorkingCalendar:
    """The working-day calendar with the configured override table."""
    overrides: dict[str, Any] = {}
    if settings.calendar_extra_holidays is not None:
        overrides["extra_holidays"] = settings.calendar_extra_holidays
    if settings.calendar_extra_workdays is not None:
        overrides["extra_workdays"] = settings.calendar_extra_workdays
    try:
        return WorkingCalendar(office_close=settings.office_close, **overrides)
    except ValueError as error:
        raise ConfigurationError(f"CERTFACTORY_CALENDAR_EXTRA_*: {error}") from None

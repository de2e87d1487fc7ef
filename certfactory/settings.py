"""Every setting, from ``CERTFACTORY_*`` environment variables, validated at start-up."""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path
from typing import Annotated

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

SOFTHSM2_MODULE = "/usr/lib/softhsm/libsofthsm2.so"


class Settings(BaseSettings):
    """certfactory's configuration. Each field is the variable ``CERTFACTORY_<NAME>``."""

    model_config = SettingsConfigDict(env_prefix="CERTFACTORY_", frozen=True, extra="ignore")

    home: Path = Field(default=Path("./var"), description="All state of an embedded run")
    database_url: str | None = Field(default=None, description="SQLAlchemy URL; default SQLite file under home")
    redis_url: str | None = Field(default=None, description="Broker; default the embedded redis-server under home")
    pkcs11_module: str = Field(default=SOFTHSM2_MODULE, description="PKCS#11 module of the CA token")
    device_pkcs11_module: str = Field(default=SOFTHSM2_MODULE, description="PKCS#11 module of the device station")
    ca_token_label: str = Field(default="certfactory-ca", description="Label of the CA token")
    ca_pin_file: Path | None = Field(default=None, description="File holding the CA token user PIN (mode 0600)")
    station: str = Field(default="station-1", description="Name of this personalisation station")
    device_storage: Path | None = Field(
        default=None, description="Where SoftHSM2 keeps the device tokens (station ports, shelf, packaged devices); "
        "default the home. A RAM disk stands in for a real token's own memory (the load test's default); devices "
        "kept there vanish at reboot")
    station_ports: int = Field(default=8, ge=1, le=256, description="Blank devices a station provisions at once")
    ca_organization: str = Field(default="certfactory Demo CA", description="O of the CA certificates")
    repository_url: str = Field(
        default="http://127.0.0.1:8080/repository", description="Public base URL of the repository (CDP, AIA)"
    )
    certificate_days: int = Field(default=1095, ge=1, le=1826, description="Subscriber certificate validity")
    # RFC 7229's id-TEST-certPolicyOne: a demo CA must not claim a real policy, and a
    # 2.25.<uuid> arc breaks pyasn1-based tools (pkilint) that cap arcs at 32 bits.
    policy_oid: str = Field(default="1.3.6.1.5.5.7.13.1", description="Certificate policy OID")
    allowed_key_types: Annotated[tuple[str, ...], NoDecode] = Field(
        default=("rsa2048", "rsa3072", "ecdsa-p256"), description="Key types the policy allows"
    )
    worker_processes: int = Field(default=0, ge=0, le=64, description="Station worker processes; 0 = one per core")
    worker_poll_ms: int = Field(default=500, ge=10, le=10_000,
                                description="Longest wait of an idle worker between polls of an empty queue")
    worker_poll_floor_ms: int = Field(default=100, ge=0, le=10_000,
                                      description="Shortest wait between two polls of an empty queue (dramatiq "
                                      "starts at 5 ms): fewer polls, at most this much latency per hop")
    # A simulated-latency device: SoftHSM2 makes an RSA key in milliseconds, a USB token in
    # seconds; the load test checks `certfactory plan` against the pipeline with these.
    simulated_keygen_seconds: float = Field(
        default=0.0, ge=0, le=60, description="Delay added to each key generation on a device (testing only)"
    )
    simulated_sign_seconds: float = Field(
        default=0.0, ge=0, le=60, description="Delay added to each certificate signature by the CA (testing only)"
    )
    dramatiq_metrics_address: str = Field(
        default="127.0.0.1:9191",
        description="dramatiq's own Prometheus exporter; pools station/ca/general listen on port +0/+1/+2",
    )
    http_address: str = Field(default="127.0.0.1:8080", description="Address of `certfactory serve`")
    api_rate: float = Field(default=5.0, gt=0, le=100_000, description="API calls per second per caller (refill)")
    api_burst: int = Field(default=30, ge=1, le=100_000, description="API calls a caller may make at once")
    crl_refresh_seconds: float = Field(default=3600.0, ge=1, le=43_200,
                                       description="`serve` re-signs the CRL this often (its nextUpdate is 24 h)")
    http_tls_cert: Path | None = Field(default=None, description="`serve` speaks HTTPS with this certificate (PEM)")
    http_tls_key: Path | None = Field(default=None, description="The private key of http_tls_cert (PEM)")
    http_tls_client_ca: Path | None = Field(
        default=None, description="Ask clients for a certificate chaining to these (PEM): an agency whose head "
        "certificate is presented needs no API key (mutual TLS)")
    pickup_address: str = Field(
        default="Phòng tiếp nhận, trụ sở CA, Hà Nội", description="Where agencies collect devices by default"
    )
    pickup_hours: str = Field(default="08:00–11:30, 13:30–16:30", description="When agencies collect by default")
    # The calendar's override table: the government announces swap days and make-up
    # Saturdays each year, often after the holidays package was released.
    calendar_extra_holidays: Annotated[tuple[dt.date, ...] | None, NoDecode] = Field(
        default=None, description="Comma-separated ISO dates off work the holidays package misses (swap days); "
        "unset = the built-in table"
    )
    calendar_extra_workdays: Annotated[tuple[dt.date, ...] | None, NoDecode] = Field(
        default=None, description="Comma-separated ISO dates worked whatever the package says (make-up Saturdays); "
        "unset = the built-in table"
    )
    office_close: dt.time = Field(default=dt.time(17, 0), description="After this local time a dossier counts "
                                  "as received on the next working day")

    @field_validator("allowed_key_types", "calendar_extra_holidays", "calendar_extra_workdays", mode="before")
    @classmethod
    def _split_commas(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(part.strip() for part in value.split(",") if part.strip())
        return value

    @property
    def resolved_home(self) -> Path:
        """The absolute home directory (children and other hosts need absolute paths)."""
        return self.home.expanduser().resolve()

    @property
    def ledger_url(self) -> str:
        """The database URL in force."""
        return self.database_url or f"sqlite:///{self.resolved_home / 'ledger.sqlite'}"

    @property
    def ca_pin_path(self) -> Path:
        """Where the CA token's user PIN is kept."""
        return self.ca_pin_file or self.resolved_home / "ca" / "user.pin"

    @property
    def station_processes(self) -> int:
        """How many station worker processes to run."""
        return self.worker_processes or max(1, os.cpu_count() or 1)

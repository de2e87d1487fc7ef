"""The chaos run's record of faults and its checks: what `bench/chaos.py` did to the
pipeline, and whether every request still ended published exactly once."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlalchemy

from certfactory import wiring
from certfactory.settings import Settings
from factory.ledger import Ledger
from schemas.status import RequestState as S

PATH = [S.received, S.validated, S.key_generated, S.signed, S.packaged, S.awaiting_activation, S.activated,
        S.published]


@dataclass
class Faults:
    """What was done to the pipeline, and when (seconds since submission)."""

    kills: list[dict[str, Any]] = field(default_factory=list)
    redis_restart: dict[str, Any] | None = None
    database_drop: dict[str, Any] | None = None
    token_removal: dict[str, Any] | None = None
    pool_restarts: int = 0
    last_at: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {"worker_kills": self.kills, "redis_restart": self.redis_restart, "database_drop": self.database_drop,
                "token_removal": self.token_removal, "pool_restarts": self.pool_restarts,
                "last_fault_seconds": round(self.last_at, 2)}


def _check(name: str, problems: list[str], detail: str) -> dict[str, Any]:
    return {"check": name, "ok": not problems, "detail": detail if not problems else
            f"{len(problems)} problem(s): " + "; ".join(problems[:5])}


def check_published_once(ledger: Ledger, home: Path, batch_id: str, accepted: int) -> dict[str, Any]:
    """Every accepted request published, by exactly one transition, with one certificate in the repository."""
    from factory.tables import audit_events, certificates, requests

    problems = []
    with ledger.engine.connect() as connection:
        rows = connection.execute(sqlalchemy.select(requests.c.id, requests.c.state)
                                  .where(requests.c.batch_id == batch_id)).all()
        published_moves = dict(connection.execute(
            sqlalchemy.select(audit_events.c.request_id, sqlalchemy.func.count())
            .where(audit_events.c.kind == "transition", audit_events.c.to_state == "published")
            .group_by(audit_events.c.request_id)).all())
        certificate_rows = dict(connection.execute(
            sqlalchemy.select(certificates.c.request_id, certificates.c.serial)
            .where(certificates.c.status == "published")).all())
    for row in rows:
        if row.state != "published":
            problems.append(f"request {row.id} ended {row.state}")
        elif published_moves.get(row.id) != 1:
            problems.append(f"request {row.id} was published {published_moves.get(row.id, 0)} times")
        elif row.id not in certificate_rows:
            problems.append(f"request {row.id} has no published certificate row")
    files = {path.stem for path in (home / "repository" / "certs").glob("*.cer")}
    expected = {certificate_rows[row.id] for row in rows if row.id in certificate_rows}
    if files != expected:
        problems.append(f"repository holds {len(files)} certificates, ledger published {len(expected)} "
                        f"({len(files - expected)} unknown, {len(expected - files)} missing)")
    index = json.loads((home / "repository" / "index.json").read_text())["certificates"]
    if sorted(entry["serial"] for entry in index) != sorted(expected):
        problems.append(f"index.json lists {len(index)} certificates, expected {len(expected)}")
    if len(rows) != accepted:
        problems.append(f"{len(rows)} requests in the ledger, {accepted} accepted")
    published = sum(1 for row in rows if row.state == "published")
    return _check("published exactly once", problems, f"{published} of {accepted} published exactly once")


def check_serials(ledger: Ledger, home: Path) -> dict[str, Any]:
    """Serials unique across the ledger and the repository files, and every reserved serial signed."""
    from cryptography import x509

    from factory.tables import certificates

    problems = []
    with ledger.engine.connect() as connection:
        rows = connection.execute(sqlalchemy.select(certificates.c.serial, certificates.c.der)).all()
    serials = [row.serial for row in rows]
    if len(serials) != len(set(serials)):
        problems.append("a serial appears twice in the ledger")
    unsigned = [row.serial for row in rows if row.der is None]
    if unsigned:
        problems.append(f"{len(unsigned)} serial(s) reserved but never signed")
    in_files = [x509.load_der_x509_certificate(path.read_bytes()).serial_number
                for path in (home / "repository" / "certs").glob("*.cer")]
    if len(in_files) != len(set(in_files)):
        problems.append("two repository certificates share a serial")
    return _check("serials unique", problems, f"{len(serials)} serials, all unique")


def check_devices(settings: Settings, ledger: Ledger, faults: Faults) -> list[dict[str, Any]]:
    """Each packaged device, opened through PKCS#11 with its envelope PIN, holds exactly
    one key pair and one subscriber certificate, the ledger's; no device is unaccounted for."""
    import pkcs11
    from pkcs11 import Attribute, ObjectClass

    from factory import tokens
    from factory.tables import certificates, devices, requests

    home, station = settings.resolved_home, wiring.station(settings)
    with ledger.engine.connect() as connection:
        rows = connection.execute(sqlalchemy.select(devices)).all()
        published = dict(connection.execute(
            sqlalchemy.select(requests.c.id, certificates.c.der).join(certificates, certificates.c.request_id ==
                                                                     requests.c.id)
            .where(requests.c.state == "published")).all())
    held, orphans = [], []
    packaged = [row for row in rows if row.state == "packaged"]
    for row in rows:
        if row.state in ("claimed", "personalised"):
            orphans.append(f"device {row.serial} left {row.state} (request {row.request_id})")
        elif row.state == "packaged" and row.request_id not in published:
            orphans.append(f"packaged device {row.serial} belongs to no published request")
        elif row.state not in ("blank", "packaged", "removed"):
            orphans.append(f"device {row.serial} in unknown state {row.state}")
    on_disk = {path.name for path in (home / "devices").iterdir() if path.is_dir()}
    if on_disk != {row.serial for row in packaged}:
        orphans.append(f"devices/ holds {len(on_disk)} devices, the ledger packaged {len(packaged)}")
    blank = {row.token_dir for row in rows if row.state == "blank"}
    # a removed device may still sit in its port: unreadable after a crash cut its PIN change short
    allowed = blank | {row.token_dir for row in rows if row.state == "removed"}
    stray = [name for name in (entry.name for entry in station.tokendir.iterdir()) if name in
             {row.token_dir for row in rows} and name not in allowed]
    if stray:
        orphans.append(f"{len(stray)} token(s) on the station the ledger says left it")
    removed = [row.serial for row in rows if row.state == "removed"]
    if faults.token_removal is not None and faults.token_removal["device"] not in removed:
        orphans.append(f"the pulled device {faults.token_removal['device']} is not recorded as removed")
    # Open every packaged device like a subscriber would.
    for row in packaged:
        os.environ["SOFTHSM2_CONF"] = str(home / "devices" / row.serial / "softhsm2.conf")
        tokens.reinitialize(settings.device_pkcs11_module)
        pin = json.loads((home / "pin-envelopes" / f"{row.serial}.json").read_text())["user_pin"]
        try:
            token = tokens.find_token(settings.device_pkcs11_module, serial=row.serial)
            with token.open(user_pin=pin) as session:
                private = list(session.get_objects({Attribute.CLASS: ObjectClass.PRIVATE_KEY}))
                public = list(session.get_objects({Attribute.CLASS: ObjectClass.PUBLIC_KEY}))
                own = [c[Attribute.VALUE] for c in session.get_objects({Attribute.CLASS: ObjectClass.CERTIFICATE})
                       if c[Attribute.ID] == bytes.fromhex(row.key_id)]
        except (pkcs11.exceptions.PKCS11Error, CertFactoryError) as error:
            held.append(f"device {row.serial} cannot be opened: {type(error).__name__}")
            continue
        if len(private) != 1 or len(public) != 1 or len(own) != 1:
            held.append(f"device {row.serial} holds {len(private)} private keys, {len(public)} public keys, "
                        f"{len(own)} subscriber certificates")
        elif own[0] != published.get(row.request_id):
            held.append(f"device {row.serial} holds a certificate that is not its request's")
    return [_check("each device holds one key and one certificate", held,
                   f"{len(packaged)} packaged devices opened through PKCS#11"),
            _check("no orphan device", orphans, f"{len(rows)} devices accounted for "
                   f"({len(packaged)} packaged, {len(removed)} removed, {len(blank)} blank)")]


def check_audit(ledger: Ledger, batch_id: str) -> list[dict[str, Any]]:
    """Every request's trail goes through every state once, in order; the hash chain verifies."""
    from factory.audit import verify_chain
    from factory.tables import audit_events, requests

    path = [state.value for state in PATH]
    problems = []
    with ledger.engine.connect() as connection:
        ids = set(connection.execute(sqlalchemy.select(requests.c.id).where(requests.c.batch_id == batch_id))
                  .scalars())
        trails: dict[str, list[str]] = {request_id: [] for request_id in ids}
        for request_id, to_state in connection.execute(
                sqlalchemy.select(audit_events.c.request_id, audit_events.c.to_state)
                .where(audit_events.c.kind.in_(["received", "transition"]), audit_events.c.request_id.in_(ids))
                .order_by(audit_events.c.seq)):
            trails[request_id].append(to_state)
    for request_id, trail in trails.items():
        if trail != path:
            problems.append(f"request {request_id}: {' → '.join(trail)}")
    checked, broken = verify_chain(ledger)
    chain = [] if broken is None else [broken.describe()]
    return [_check("audit trails complete", problems, f"{len(ids)} trails, each {len(path)} states in order"),
            _check("audit chain verifies", chain, f"{checked} rows chained")]


def run_checks(settings: Settings, ledger: Ledger, batch_id: str, result: dict[str, Any],
               faults: Faults) -> list[dict[str, Any]]:
    """Every check of the run, each {check, ok, detail}."""
    home = settings.resolved_home
    checks = [check_published_once(ledger, home, batch_id, result["accepted"]), check_serials(ledger, home),
              *check_devices(settings, ledger, faults), *check_audit(ledger, batch_id)]
    drain = result["drain_seconds_after_last_fault"]
    checks.append(_check("drained in time", [] if drain is not None and drain <= result["drain_limit_seconds"]
                         else [f"not drained within {result['drain_limit_seconds']} s of the last fault"
                               if drain is not None else "did not drain before the time limit"],
                         f"{drain} s after the last fault (limit {result['drain_limit_seconds']} s)"))
    missing = [name for name, done in (("worker kill", faults.kills), ("redis restart", faults.redis_restart),
                                       ("database drop", faults.database_drop),
                                       ("token removal", faults.token_removal)) if not done]
    checks.append(_check("every fault injected", [f"no {name}" for name in missing],
                         f"{len(faults.kills)} worker kills, a redis restart, a database drop, a token removal"))
    return checks

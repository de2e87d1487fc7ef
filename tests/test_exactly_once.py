"""At-least-once delivery, exactly-once effects: every stage message delivered again,
activation asked twice, and still one device, one key, one certificate per request."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis

from certfactory.embedded import RedisServer, WorkerPools
from certfactory.messaging import actors_for
from certfactory.settings import Settings
from factory.ledger import Ledger
from factory.synthetic import generate_requests
from factory.tables import audit_events, certificates, devices
from tests.agency import endorsed
from tests.conftest import run_cli

pytestmark = pytest.mark.integration

# Try to read each CA private key's secret and to wrap it out: the token must refuse both.
_EXPORT_ATTEMPT = """
import sys, pkcs11
from pkcs11 import Attribute, ObjectClass, KeyType, Mechanism
lib = pkcs11.lib("/usr/lib/softhsm/libsofthsm2.so")
token = lib.get_token(token_label="certfactory-ca")
with token.open(rw=True, user_pin=sys.argv[1]) as session:
    wrapper = session.generate_key(KeyType.AES, 256, store=False, template={Attribute.WRAP: True})
    for label in ("root-ca", "issuing-ca"):
        key = session.get_key(object_class=ObjectClass.PRIVATE_KEY, label=label)
        try:
            key[Attribute.PRIVATE_EXPONENT]
            print("READABLE")
        except pkcs11.exceptions.PKCS11Error as error:
            print(type(error).__name__)
    for label in ("root-ca", "issuing-ca"):
        key = session.get_key(object_class=ObjectClass.PRIVATE_KEY, label=label)
        try:
            wrapper.wrap_key(key, mechanism=Mechanism.AES_KEY_WRAP_PAD)
            print("WRAPPED")
        except pkcs11.exceptions.PKCS11Error as error:
            print(type(error).__name__)
"""


def _drain(client: redis.Redis, seconds: float = 60) -> None:
    """Wait until no queue holds a ready or unacknowledged message."""
    deadline = time.monotonic() + seconds
    quiet_since = None
    while time.monotonic() < deadline:
        busy = any(client.llen(key) for key in client.scan_iter("dramatiq:*") if client.type(key) == b"list")
        busy = busy or any(client.scard(key) for key in client.scan_iter("dramatiq:__acks__.*"))
        if not busy:
            quiet_since = quiet_since or time.monotonic()
            if time.monotonic() - quiet_since > 1.0:
                return
        else:
            quiet_since = None
        time.sleep(0.1)
    pytest.fail("queues did not drain")


def _wait_for(ledger: Ledger, batch_id: str, state: str, count: int, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        counts = {s.value: n for s, n in ledger.state_counts(batch_id).items()}
        if counts[state] == count:
            return
        time.sleep(0.2)
    pytest.fail(f"expected {count} {state}, have {counts}")


def _batch_file(folder: Path) -> Path:
    good = [r.model_dump(mode="json") for r in generate_requests(3, seed=7, key_type="ecdsa-p256")]
    bad = dict(good[0], request_ref="HS-BAD-PROVINCE", citizen_id="099" + good[0]["citizen_id"][3:])
    path = folder / "batch.jsonl"
    path.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in [*good, bad]), encoding="utf-8")
    return path


def test_redelivered_messages_and_repeated_activation_change_nothing(tmp_path: Path, redis_server: RedisServer,
                                                                    tools: dict[str, str]) -> None:
    """Sending every stage's message again, and activating twice, issues nothing twice,
    while the bad row is rejected with its reason and the good rows are published."""
    home = tmp_path / "var"
    run_cli(home, "init")
    settings = Settings(home=home, redis_url=redis_server.url, worker_processes=2)
    pools = WorkerPools(settings, redis_server.url).start()
    client = redis.Redis.from_url(redis_server.url)
    ledger = Ledger.connect(settings.ledger_url)
    try:
        batch = _batch_file(tmp_path)
        submitted = json.loads(run_cli(home, "submit", str(batch), "--agency", "BTC", *endorsed(home, batch), "--json",
                                       CERTFACTORY_REDIS_URL=redis_server.url).stdout)
        batch_id = submitted["batch_id"]
        _wait_for(ledger, batch_id, "awaiting_activation", 3)
        _wait_for(ledger, batch_id, "rejected", 1)
        actors = actors_for(redis_server.url)
        ids = ledger.request_ids(batch_id=batch_id)
        for request_id in ids:
            for stage in ("validate", "generate_key", "sign", "package", "await_activation"):
                actors.STAGES[stage].send(request_id)
        _drain(client)
        for _ in range(2):
            run_cli(home, "activate", "--batch", batch_id, CERTFACTORY_REDIS_URL=redis_server.url)
        _wait_for(ledger, batch_id, "published", 3)
        for request_id in ids:
            actors.publish.send(request_id)
        _drain(client)
    finally:
        pools.stop()
    status = json.loads(run_cli(home, "status", "--batch", batch_id, "--json").stdout)
    assert status["states"]["published"] == 3 and status["states"]["rejected"] == 1
    assert set(status["states"]) >= {"received", "validated", "key_generated", "signed", "packaged",
                                     "awaiting_activation", "activated", "published", "rejected", "failed", "revoked"}
    with ledger.engine.connect() as connection:
        assert connection.execute(certificates.select()).rowcount != 0
        assert len(connection.execute(certificates.select()).all()) == 3
        assigned = connection.execute(devices.select().where(devices.c.request_id.is_not(None))).all()
        assert len(assigned) == 3 and {d.state for d in assigned} == {"packaged"}
        for request_id in ids:
            moves = [e.to_state for e in connection.execute(
                audit_events.select().where(audit_events.c.request_id == request_id,
                                            audit_events.c.kind.in_(["received", "transition"])))]
            assert len(moves) == len(set(moves)), f"a state was entered twice: {moves}"
    rejected = next(r for r in submitted["rows"] if r["request_ref"] == "HS-BAD-PROVINCE")
    assert rejected["status"] == "rejected" and rejected["reasons"][0]["code"] == "citizen_id.province"
    row = next(ledger.get_request(i) for i in ids if ledger.get_request(i).request_ref == "HS-BAD-PROVINCE")
    assert row.state == "rejected" and row.reason_code == "citizen_id.province"
    assert len(list((home / "repository" / "certs").glob("*.cer"))) == 3
    for device in (home / "devices").iterdir():
        pin = json.loads((home / "pin-envelopes" / f"{device.name}.json").read_text())["user_pin"]
        keys = subprocess.run(["pkcs11-tool", "--module", "/usr/lib/softhsm/libsofthsm2.so", "--login", "--pin", pin,
                               "--list-objects", "--type", "privkey"], capture_output=True, text=True,
                              env={**os.environ, "SOFTHSM2_CONF": str(device / "softhsm2.conf")})
        assert keys.stdout.count("Private Key Object") == 1, keys.stdout
    again = run_cli(home, "activate", "--request", row.id, check=False, CERTFACTORY_REDIS_URL=redis_server.url)
    assert again.returncode != 0 and "rejected" in again.stderr and "Traceback" not in again.stderr


def test_ca_private_keys_are_sensitive_and_never_extractable(tmp_path: Path, tools: dict[str, str]) -> None:
    """The root and issuing CA keys were generated on the CA token and cannot leave it;
    running init again creates nothing."""
    home = tmp_path / "var"
    run_cli(home, "init")
    again = json.loads(run_cli(home, "init", "--json").stdout)
    assert again["created"] == []
    pin = (home / "ca" / "user.pin").read_text().strip()
    listing = subprocess.run(["pkcs11-tool", "--module", "/usr/lib/softhsm/libsofthsm2.so", "--login", "--pin", pin,
                              "--list-objects", "--type", "privkey"], capture_output=True, text=True,
                             env={**os.environ, "SOFTHSM2_CONF": str(home / "ca" / "softhsm2.conf")})
    assert listing.returncode == 0, listing.stderr
    blocks = listing.stdout.split("Private Key Object")[1:]
    assert len(blocks) == 2
    for block in blocks:
        assert "sensitive" in block and "never extractable" in block, block
    probe = subprocess.run([sys.executable, "-c", _EXPORT_ATTEMPT, pin], capture_output=True, text=True,
                           env={**os.environ, "SOFTHSM2_CONF": str(home / "ca" / "softhsm2.conf")})
    assert probe.stdout.split() == ["AttributeSensitive", "AttributeSensitive", "KeyUnextractable",
                                    "KeyUnextractable"], probe.stdout + probe.stderr
    for name in ("user.pin", "so.pin"):
        assert oct((home / "ca" / name).stat().st_mode & 0o777) == "0o600"

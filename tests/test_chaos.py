"""The chaos harness, small: a worker killed, redis-server restarted, the ledger's
connections dropped and a device pulled out during key generation, and still every
request is published exactly once with nothing left unaccounted for."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import redis

from certfactory.demo_agency import submit_endorsed
from certfactory.embedded import RedisServer, WorkerPools
from certfactory.settings import Settings
from factory.ledger import Ledger
from factory.synthetic import generate_requests
from factory.tables import audit_events, devices
from tests.conftest import ROOT, run_cli
from tests.test_exactly_once import _wait_for

pytestmark = pytest.mark.integration


def test_chaos_run_publishes_every_request_exactly_once(tmp_path: Path, postgres_url: str,
                                                        tools: dict[str, str]) -> None:
    """30 requests through the real pipeline on PostgreSQL, through one of each fault:
    every check of bench/chaos.py passes and the pipeline drains within its limit."""
    out = tmp_path / "chaos.json"
    run = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "chaos.py"), "--count", "30", "--key-type", "ecdsa-p256",
         "--database-url", postgres_url, "--max-kills", "1", "--station-processes", "2",
         "--home", str(tmp_path / "var"), "--json-out", str(out), "--quiet", "--timeout", "240"],
        capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert out.exists(), run.stdout + run.stderr
    result = json.loads(out.read_text())
    failed = [check for check in result["checks"] if not check["ok"]]
    assert run.returncode == 0 and not failed, json.dumps(failed, indent=1) + run.stderr[-3000:]
    assert "Traceback" not in run.stderr
    faults = result["faults"]
    assert len(faults["worker_kills"]) == 1 and faults["pool_restarts"] >= 1
    assert faults["redis_restart"] and faults["token_removal"]
    assert "PostgreSQL backends" in faults["database_drop"]["what"]
    assert result["states"]["published"] == 30
    assert result["drain_seconds_after_last_fault"] < 120
    # the pulled device is accounted for, and its request was issued on another one
    pulled = faults["token_removal"]
    assert (tmp_path / "var" / "pulled").is_dir()
    assert not (tmp_path / "var" / "devices" / pulled["device"]).exists()
    _assert_owner_only(tmp_path / "var")


def _assert_owner_only(home: Path) -> None:
    """PIN envelopes and every token directory are readable by their owner only."""
    folders = [home / "pin-envelopes", home / "ca" / "tokens", *(home / "ca" / "tokens").iterdir(),
               *(home / "station").glob("*/tokens"), *(home / "station").glob("*/tokens/*"),
               *(home / "devices").iterdir(), *(home / "devices").glob("*/tokens/*")]
    files = [*(home / "pin-envelopes").iterdir(), home / "ca" / "user.pin", home / "ca" / "so.pin"]
    assert len(files) > 30 and len(folders) > 60
    for path in folders:
        assert stat.S_IMODE(path.stat().st_mode) == 0o700, path
    for path in files:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path


def _worker_pid(pools: WorkerPools) -> int:
    parent = next(iter(pools.processes.values()))
    return sorted(psutil.Process(parent.pid).children(), key=lambda c: c.create_time())[0].pid


def test_a_message_held_by_a_killed_worker_comes_back_within_a_minute(tmp_path: Path, redis_server: RedisServer,
                                                                      tools: dict[str, str]) -> None:
    """SIGKILL the station worker while it holds generate_key messages: once a worker is
    running again they are redelivered within 60 s, and each request still gets one
    device with one key."""
    home = tmp_path / "var"
    run_cli(home, "init")
    settings = Settings(home=home, redis_url=redis_server.url, worker_processes=1)
    ledger = Ledger.connect(settings.ledger_url)
    batch = tmp_path / "batch.jsonl"
    batch.write_text("".join(r.model_dump_json() + "\n" for r in generate_requests(3, seed=5, key_type="rsa3072")))
    pools = {pool: WorkerPools(settings, redis_server.url, (pool,)).start() for pool in ("station", "ca", "general")}
    client = redis.Redis.from_url(redis_server.url)
    try:
        batch_id = submit_endorsed(settings, ledger, batch, "BTC")["batch_id"]
        deadline = time.monotonic() + 60
        while not (held := [m for key in client.scan_iter("dramatiq:__acks__.*.generate_key")
                            for m in client.smembers(key)]):
            assert time.monotonic() < deadline, "the station worker never took a message"
            time.sleep(0.01)
        os.kill(_worker_pid(pools["station"]), signal.SIGKILL)
        killed_at = time.monotonic()
        bodies = [json.loads(client.hget("dramatiq:generate_key.msgs", m)) for m in held]
        held_requests = {body["args"][0] for body in bodies}
        pools["station"].processes["station"].wait(30)  # dramatiq stops the pool when a worker dies
        pools["station"].stop()
        pools["station"] = WorkerPools(settings, redis_server.url, ("station",)).start()
        while any(ledger.get_request(r).state in ("received", "validated") for r in held_requests):
            assert time.monotonic() - killed_at < 60, "a held message was not redelivered within 60 s"
            time.sleep(0.2)
        redelivered_after = time.monotonic() - killed_at
        _wait_for(ledger, batch_id, "awaiting_activation", 3, seconds=60)
    finally:
        for pool in pools.values():
            pool.stop()
    assert redelivered_after > 1  # it really waited for the dead worker's heartbeat to expire
    with ledger.engine.connect() as connection:
        assigned = connection.execute(devices.select().where(devices.c.request_id.is_not(None))).all()
        assert sorted(d.request_id for d in assigned) == sorted(ledger.request_ids(batch_id=batch_id))
        for request_id in held_requests:
            moves = [e.to_state for e in connection.execute(audit_events.select().where(
                audit_events.c.request_id == request_id, audit_events.c.kind == "transition"))]
            assert moves.count("key_generated") == 1, moves
    for device in assigned:
        pin = json.loads((home / "pin-envelopes" / f"{device.serial}.json").read_text())["user_pin"]
        keys = subprocess.run(["pkcs11-tool", "--module", "/usr/lib/softhsm/libsofthsm2.so", "--login", "--pin", pin,
                               "--list-objects", "--type", "privkey"], capture_output=True, text=True,
                              env={**os.environ, "SOFTHSM2_CONF": str(home / "devices" / device.serial /
                                                                      "softhsm2.conf")})
        assert keys.stdout.count("Private Key Object") == 1, keys.stdout + keys.stderr


def test_reconcile_counts_a_queued_or_held_message_as_pending(redis_server: RedisServer) -> None:
    """A request whose stage message is queued, or held by a worker, has a message that
    will run: reconciliation must not send it again; once acknowledged it has none."""
    from certfactory.messaging import actors_for
    from workers.broker import requests_in_broker

    actors = actors_for(redis_server.url)
    client = actors.validate.broker.client
    actors.generate_key.send("queued-request")
    actors.sign.send_with_options(args=("delayed-request",), delay=60_000)
    assert requests_in_broker(client) == {"queued-request", "delayed-request"}
    consumer = actors.validate.broker.consume("generate_key", prefetch=1, timeout=1000)
    held = next(consumer)
    assert held is not None and held.args == ("queued-request",)
    assert client.llen("dramatiq:generate_key") == 0  # now only in the worker's acks set
    assert "queued-request" in requests_in_broker(client)
    consumer.ack(held)
    next(consumer, None)  # acknowledgements are flushed on the next fetch
    consumer.close()
    assert requests_in_broker(client) == {"delayed-request"}


def test_status_counts_and_lists_dead_letters(tmp_path: Path, redis_server: RedisServer) -> None:
    """A message dramatiq gave up on shows in `status`: counted per queue and listed with
    its actor and request."""
    from certfactory import operations
    from certfactory.messaging import actors_for
    from schemas.status import StatusReport

    actors = actors_for(redis_server.url)
    actors.sign.send("doomed-request")
    consumer = actors.sign.broker.consume("sign", prefetch=1, timeout=1000)
    message = next(consumer)
    consumer.nack(message)  # what Retries does once the retries are spent
    next(consumer, None)
    consumer.close()
    settings = Settings(home=tmp_path / "var", redis_url=redis_server.url)
    report = operations.status(Ledger.connect(f"sqlite:///{tmp_path / 'ledger.sqlite'}"), None, settings)
    StatusReport.model_validate(report)
    assert report["dead_letters"]["sign"] == 1
    [listed] = report["dead_letter_messages"]
    assert listed["queue"] == "sign" and listed["actor"] == "sign" and listed["request_id"] == "doomed-request"


def test_sign_refuses_a_public_key_its_device_did_not_prove(tmp_path: Path, redis_server: RedisServer,
                                                            tools: dict[str, str]) -> None:
    """A public key swapped in the ledger between key generation and signing has no proof
    of possession from the device: the CA signs nothing for it and the request fails with
    the reason; the untouched request is issued."""
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    home = tmp_path / "var"
    run_cli(home, "init")
    settings = Settings(home=home, redis_url=redis_server.url, worker_processes=1)
    ledger = Ledger.connect(settings.ledger_url)
    batch = tmp_path / "batch.jsonl"
    batch.write_text("".join(r.model_dump_json() + "\n" for r in generate_requests(2, seed=9, key_type="ecdsa-p256")))
    pools = [WorkerPools(settings, redis_server.url, ("station", "general")).start()]
    try:
        batch_id = submit_endorsed(settings, ledger, batch, "BTC")["batch_id"]
        _wait_for(ledger, batch_id, "key_generated", 2)
        victim, other = ledger.request_ids(batch_id=batch_id)
        foreign = ec.generate_private_key(ec.SECP256R1()).public_key().public_bytes(
            Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
        with ledger.transaction() as connection:
            connection.execute(devices.update().where(devices.c.request_id == victim).values(public_key=foreign))
        pools.append(WorkerPools(settings, redis_server.url, ("ca",)).start())
        _wait_for(ledger, batch_id, "failed", 1)
        _wait_for(ledger, batch_id, "awaiting_activation", 1)
    finally:
        for pool in pools:
            pool.stop()
    row = ledger.get_request(victim)
    assert row.reason_code == "sign.policy" and "not proven to be the key on device" in row.reason
    assert ledger.certificate_for_request(victim) is None  # refused before a serial was reserved
    assert ledger.get_request(other).state == "awaiting_activation"

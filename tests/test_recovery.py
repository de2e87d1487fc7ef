"""An operator's repairs: lost messages resumed by `reconcile`, failed requests sent back
in by `retry` from where their durable facts say they got, never issued anew."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import redis

from certfactory.embedded import RedisServer, WorkerPools
from certfactory.settings import Settings
from factory.ledger import Ledger
from factory.synthetic import generate_requests
from factory.tables import certificates
from schemas.status import RequestState
from tests.agency import endorsed
from tests.conftest import run_cli
from tests.test_exactly_once import _wait_for

pytestmark = pytest.mark.integration


def test_lost_messages_are_resumed_and_failed_requests_retried(tmp_path: Path, redis_server: RedisServer,
                                                               tools: dict[str, str]) -> None:
    """Requests whose generate_key messages were lost are resumed by `reconcile`; a request
    parked in `failed` after signing is retried from `signed`, keeping its certificate."""
    home = tmp_path / "var"
    run_cli(home, "init")
    batch = tmp_path / "batch.jsonl"
    batch.write_text("".join(r.model_dump_json() + "\n" for r in generate_requests(3, seed=11,
                                                                                  key_type="ecdsa-p256")))
    settings = Settings(home=home, redis_url=redis_server.url, worker_processes=1)
    ledger = Ledger.connect(settings.ledger_url)
    env = {"CERTFACTORY_REDIS_URL": redis_server.url}
    without_station = WorkerPools(settings, redis_server.url, ("ca", "general")).start()
    try:
        batch_id = json.loads(run_cli(home, "submit", str(batch), "--agency", "BTC", *endorsed(home, batch), "--json",
                                      **env).stdout)["batch_id"]
        _wait_for(ledger, batch_id, "validated", 3)
    finally:
        without_station.stop()
    client = redis.Redis.from_url(redis_server.url)
    assert client.delete("dramatiq:generate_key") == 1  # the messages are lost
    pools = WorkerPools(settings, redis_server.url).start()
    try:
        resumed = json.loads(run_cli(home, "reconcile", "--older-than", "0", "--json", **env).stdout)["resumed"]
        assert {r["stage"] for r in resumed} == {"generate_key"} and len(resumed) == 3
        _wait_for(ledger, batch_id, "awaiting_activation", 3)
        victim = ledger.request_ids(batch_id=batch_id)[0]
        serial_before = ledger.certificate_for_request(victim).serial
        with ledger.transaction() as connection:  # as if package had exhausted its retries
            ledger.transition(victim, RequestState.awaiting_activation, RequestState.failed, connection=connection,
                              reason_code="package.exhausted", reason="test")
        retried = json.loads(run_cli(home, "retry", "--failed", "--json", **env).stdout)["retried"]
        # its device was packaged and the agency told: it parks again, awaiting activation
        assert retried == [{"request_id": victim, "state": "awaiting_activation", "stage": None}]
        assert ledger.get_request(victim).state == "awaiting_activation"
        run_cli(home, "activate", "--batch", batch_id, **env)
        _wait_for(ledger, batch_id, "published", 3)
    finally:
        pools.stop()
    assert ledger.certificate_for_request(victim).serial == serial_before
    with ledger.engine.connect() as connection:
        assert len(connection.execute(certificates.select()).all()) == 3
    not_failed = run_cli(home, "retry", "--request", victim, check=False)
    assert not_failed.returncode == 1 and "is not failed" in not_failed.stderr

"""The HTTP API through FastAPI's TestClient over a real SQLite ledger: who may do what,
rate limits, batches, activation and the public repository (the live server: test_api_live)."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import unicodedata
from pathlib import Path
from typing import Any

import pytest
import redis
from click.testing import CliRunner
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from fastapi.testclient import TestClient
from sqlalchemy import select

from certfactory import wiring
from certfactory.api import create_app
from certfactory.cli import main
from certfactory.demo_agency import register_demo_agency
from certfactory.embedded import RedisServer
from certfactory.ratelimit import RateLimits
from certfactory.settings import Settings
from factory import access, ceremony
from factory.endorsement import sign_detached
from factory.ledger import Ledger
from factory.publication import Repository
from factory.synthetic import generate_requests
from factory.tables import audit_events, batches
from schemas.status import RequestState as S
from tests.softca import SoftCA, advance, certificate, file_batch, full_name, issue, publish_index

NOW = dt.datetime(2026, 11, 25, 9, 0, tzinfo=dt.UTC)


def _bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def _refusals(ledger: Ledger) -> list[dict[str, object]]:
    with ledger.engine.connect() as connection:
        rows = connection.execute(select(audit_events.c.detail).where(audit_events.c.kind == "access_refused"))
        return [json.loads(detail) for detail in rows.scalars()]


@pytest.fixture()
def settings(tmp_path: Path) -> Settings:
    """Settings of a fresh home with an SQLite ledger."""
    return Settings(home=tmp_path / "var")


@pytest.fixture()
def ledger(settings: Settings) -> Ledger:
    """The home's ledger."""
    return wiring.ledger(settings)


def _client(settings: Settings, **options: object) -> TestClient:
    return TestClient(create_app(settings, **options), raise_server_exceptions=False)  # type: ignore[arg-type]


def test_a_call_without_a_key_or_with_a_wrong_one_is_refused_with_401_and_audited(settings: Settings,
                                                                                  ledger: Ledger) -> None:
    """No key, a made-up key and a withdrawn key: 401 with the reason, an audit event each."""
    withdrawn = access.create_api_key(ledger, "BTC", NOW)
    access.revoke_api_key(ledger, withdrawn.split("_")[1], NOW)
    client = _client(settings)
    for headers in ({}, _bearer("cfk_0000_made-up"), _bearer(withdrawn), {"Authorization": "Basic dXNlcjpwdw=="}):
        answer = client.get(f"/requests/{'0' * 32}", headers=headers)
        assert answer.status_code == 401 and answer.headers["WWW-Authenticate"] == "Bearer"
        assert "API key" in answer.json()["detail"]
    refusals = _refusals(ledger)
    assert len(refusals) == 4 and {r["status"] for r in refusals} == {401}
    assert all(withdrawn not in json.dumps(r) for r in refusals)


def test_an_agency_cannot_read_activate_or_revoke_another_agencys_request(settings: Settings, ledger: Ledger,
                                                                          tmp_path: Path) -> None:
    """BNV's key gets 403 with a reason on BTC's batch, request, activation and certificate,
    and on operator actions; BTC's own key and an operator's key read them."""
    request_id = file_batch(ledger, tmp_path, "BTC", 1, seed=11)[0]
    serial = issue(ledger, SoftCA.create(), request_id, publish=True)
    batch_id = ledger.get_request(request_id).batch_id  # type: ignore[union-attr]
    own, other, operator = (access.create_api_key(ledger, code, NOW) for code in ("BTC", "BNV", None))
    client = _client(settings)
    calls = [("get", f"/batches/{batch_id}", None), ("get", f"/requests/{request_id}", None),
             ("post", f"/requests/{request_id}/activation", {}),
             ("post", f"/certificates/{serial}/revocation", {"reason": "keyCompromise"}),
             ("post", "/operator/reconcile", {})]
    for method, url, body in calls:
        answer = client.request(method, url, headers=_bearer(other), json=body)
        assert answer.status_code == 403, (url, answer.text)
        assert "agency" in answer.json()["detail"]
    assert len(_refusals(ledger)) == len(calls)
    assert {r["caller"] for r in _refusals(ledger)} == {"agency:BNV"}
    assert ledger.certificate_for_serial(serial).status == "published"  # type: ignore[union-attr]
    for key in (own, operator):
        answer = client.get(f"/requests/{request_id}", headers=_bearer(key))
        assert answer.status_code == 200 and answer.json()["certificate"]["serial"] == serial
    revoked = client.post(f"/certificates/{serial}/revocation", headers=_bearer(own),
                          json={"reason": "affiliationChanged", "detail": "moved to another unit"})
    assert revoked.status_code == 200 and revoked.json()["revoked_by"].startswith("agency:BTC")
    assert client.get(f"/requests/{request_id}", headers=_bearer(own)).json()["state"] == "revoked"


def test_calls_past_the_rate_limit_get_429_with_retry_after(settings: Settings, ledger: Ledger) -> None:
    """Three calls pass, the fourth gets 429 with Retry-After; another agency is not slowed;
    unauthenticated calls are limited per address too (each refusal is an audit write)."""
    busy, quiet = access.create_api_key(ledger, "BTC", NOW), access.create_api_key(ledger, "BNV", NOW)
    client = _client(settings, limits=RateLimits(per_second=0.2, burst=3))
    answers = [client.get(f"/batches/{'0' * 32}", headers=_bearer(busy)).status_code for _ in range(4)]
    assert answers == [404, 404, 404, 429]
    limited = client.get(f"/batches/{'0' * 32}", headers=_bearer(busy))
    assert limited.status_code == 429 and 1 <= int(limited.headers["Retry-After"]) <= 5
    assert "rate limit" in limited.json()["detail"]
    assert client.get(f"/batches/{'0' * 32}", headers=_bearer(quiet)).status_code == 404
    strangers = [client.get(f"/batches/{'0' * 32}", headers=_bearer("cfk_0_guess")).status_code for _ in range(4)]
    assert strangers == [401, 401, 401, 429] and len(_refusals(ledger)) == 3  # refusals audited up to the limit


def test_the_repository_search_finds_a_name_typed_without_diacritics(settings: Settings, ledger: Ledger,
                                                                     tmp_path: Path) -> None:
    """'NGUYEN VAN AN'-style queries find 'Nguyễn Văn An'; agency codes, CCCD hashes and the page work too."""
    authority = SoftCA.create()
    ids = file_batch(ledger, tmp_path, "BTC", 3, seed=12)
    for request_id in ids:
        issue(ledger, authority, request_id, publish=True)
    publish_index(ledger, wiring.home(settings).repository)
    name = full_name(ledger, ids[1])
    bare = unicodedata.normalize("NFD", name.replace("Đ", "D").replace("đ", "d"))
    plain = "".join(c for c in bare if not unicodedata.combining(c)).upper()
    assert plain.isascii() and not name.isascii()  # typed without the diacritics the name has
    client = _client(settings)
    found = client.get("/repository/search", params={"q": plain}).json()
    assert name in [r["full_name"] for r in found["results"]]
    assert client.get("/repository/search", params={"q": "btc"}).json()["count"] == 3
    assert client.get("/repository/search", params={"q": "Zzyzx Qwerty"}).json()["count"] == 0
    page = client.get("/repository/", params={"q": plain})
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert name in page.text and "Tìm thấy" in page.text and '<html lang="vi">' in page.text
    citizen_id = json.loads(ledger.get_request(ids[1]).record)["citizen_id"]  # type: ignore[union-attr]
    by_hash = client.get("/repository/search", params={"q": hashlib.sha256(citizen_id.encode()).hexdigest()})
    assert [r["full_name"] for r in by_hash.json()["results"]] == [name]


def test_the_repository_serves_files_by_whitelisted_names_only(settings: Settings, ledger: Ledger,
                                                               tmp_path: Path) -> None:
    """A published certificate comes back as DER with its media type; anything else is a JSON 404/422."""
    authority = SoftCA.create()
    request_id = file_batch(ledger, tmp_path, "BTC", 1, seed=13)[0]
    serial = issue(ledger, authority, request_id, publish=True)
    repository = Repository(wiring.home(settings).repository)
    repository.publish_ca(authority.root, authority.issuing)
    repository.publish(certificate(ledger, serial))
    client = _client(settings)
    der = client.get(f"/repository/certs/{serial}.cer")
    assert der.status_code == 200 and der.headers["content-type"] == "application/pkix-cert"
    assert x509.load_der_x509_certificate(der.content).serial_number == int(serial, 16)
    assert client.get("/repository/ca/issuing.pem").text.startswith("-----BEGIN CERTIFICATE-----")
    missing = client.get("/repository/crl/issuing.crl")
    assert missing.status_code == 404 and "not in the repository" in missing.json()["detail"]
    for sneaky in ("/repository/certs/..%2F..%2Fledger.sqlite", "/repository/ca/..%2Fca%2Fuser.pin"):
        answer = client.get(sneaky)
        assert answer.status_code in (404, 422) and "detail" in answer.json()


def test_a_batch_uploaded_over_http_is_filed_for_the_keys_agency(settings: Settings, ledger: Ledger,
                                                                 redis_server: RedisServer) -> None:
    """The upload with its head's detached signature is recorded under the key's agency and
    its good rows queued; the agency reads its batch, another agency gets 403; operators
    file with the CLI; a signature that is not the head's, or none, refuses the batch whole."""
    settings = settings.model_copy(update={"redis_url": redis_server.url})
    head, head_key = register_demo_agency(settings, ledger, "BTC")
    own, other, operator = (access.create_api_key(ledger, code, NOW) for code in ("BTC", "BNV", None))
    body = ("".join(r.model_dump_json() + "\n" for r in generate_requests(2, seed=14)) + "not json\n").encode()

    def upload(key: str, data: bytes, signature: bytes | None, name: str = "lô-1.jsonl") -> Any:
        files = {"file": (name, data), **({"signature": ("lô-1.jsonl.p7s", signature)} if signature else {})}
        return client.post("/batches", headers=_bearer(key), files=files)

    client = _client(settings)
    answer = upload(own, body, sign_detached(body, head, head_key))
    assert answer.status_code == 202, answer.text
    report = answer.json()
    assert (report["accepted"], report["rejected"]) == (2, 1)
    with ledger.engine.connect() as connection:
        batch = connection.execute(select(batches).where(batches.c.id == report["batch_id"])).one()
    assert batch.agency_code == "BTC" and json.loads(batch.endorsement)
    assert redis.Redis.from_url(redis_server.url).llen("dramatiq:validate") == 2
    status = client.get(f"/batches/{report['batch_id']}", headers=_bearer(own)).json()
    assert status["states"]["received"] == 2 and status["rows"] == 3 and status["rejected"] == 1
    assert client.get(f"/batches/{report['batch_id']}", headers=_bearer(other)).status_code == 403
    by_operator = upload(operator, body, sign_detached(body, head, head_key))
    assert by_operator.status_code == 403 and "certfactory submit" in by_operator.json()["detail"]
    fresh = "".join(r.model_dump_json() + "\n" for r in generate_requests(1, seed=15)).encode()
    for signature, status_code in ((sign_detached(body, head, head_key), 400), (b"not a CMS signature", 400),
                                   (None, 422), (b"0" * 70_000, 413)):
        refused = upload(own, fresh, signature)
        assert refused.status_code == status_code, refused.text
        assert "signature" in refused.text.lower()
    assert redis.Redis.from_url(redis_server.url).llen("dramatiq:validate") == 2  # nothing more queued


@pytest.mark.integration
def test_activation_over_http_is_idempotent(settings: Settings, redis_server: RedisServer, tmp_path: Path,
                                            tools: dict[str, str]) -> None:
    """Asked twice, the request is activated once and one publish message is sent."""
    settings = settings.model_copy(update={"redis_url": redis_server.url})
    authority = SoftCA.create()
    ca_files = ceremony.CAFiles(wiring.home(settings).ca)  # activation needs the CA chain, not the CA token
    ca_files.folder.mkdir(parents=True)
    ca_files.root.write_bytes(authority.root.public_bytes(Encoding.PEM))
    ca_files.issuing.write_bytes(authority.issuing.public_bytes(Encoding.PEM))
    ledger = wiring.ledger(settings)
    request_id = file_batch(ledger, tmp_path, "BTC", 1, seed=15)[0]
    issue(ledger, authority, request_id, publish=False)
    advance(ledger, request_id, S.awaiting_activation)
    key = access.create_api_key(ledger, "BTC", NOW)
    client = _client(settings)
    first = client.post(f"/requests/{request_id}/activation", headers=_bearer(key), json={})
    second = client.post(f"/requests/{request_id}/activation", headers=_bearer(key))
    assert first.status_code == second.status_code == 200, first.text + second.text
    assert (first.json()["activated"], second.json()["activated"]) == (True, False)
    assert second.json()["state"] == "activated"
    assert redis.Redis.from_url(redis_server.url).llen("dramatiq:publish") == 1


def test_api_keys_from_the_command_line_are_shown_once_listed_by_id_and_withdrawn(settings: Settings,
                                                                                   ledger: Ledger) -> None:
    """`agencies key create` prints the key once (the list shows ids only), the key opens
    the API, `agencies key revoke` closes it; an unregistered agency gets no key."""
    register_demo_agency(settings, ledger, "BTC")
    runner = CliRunner(env={"CERTFACTORY_HOME": str(settings.home)})

    def cli(*args: str, ok: bool = True) -> Any:
        done = runner.invoke(main, list(args))
        assert (done.exit_code == 0) is ok, done.output
        assert done.exception is None or isinstance(done.exception, SystemExit), done.exception
        return done

    created = json.loads(cli("agencies", "key", "create", "BTC", "--json").output)
    listed = cli("agencies", "key", "list", "--json").output
    assert created["key_id"] in listed and created["key"] not in listed
    client = _client(settings)
    assert client.get(f"/requests/{'0' * 32}", headers=_bearer(created["key"])).status_code == 404
    cli("agencies", "key", "revoke", created["key_id"])
    assert client.get(f"/requests/{'0' * 32}", headers=_bearer(created["key"])).status_code == 401
    assert "not registered" in cli("agencies", "key", "create", "NOPE", ok=False).output

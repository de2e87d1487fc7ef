"""The HTTP API on a live uvicorn server: schemathesis drives its published OpenAPI, and
headless Chromium loads the Vietnamese search page, searches a name and saves a screenshot."""

from __future__ import annotations

import datetime as dt
import re
import shutil
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from certfactory import wiring
from certfactory.embedded import RedisServer, free_port
from certfactory.settings import Settings
from factory import access, revocation
from factory.publication import Repository
from tests.conftest import certfactory_env
from tests.softca import SoftCA, certificate, file_batch, full_name, issue, publish_index

NOW = dt.datetime(2026, 11, 25, 9, 0, tzinfo=dt.UTC)


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """`certfactory serve` on a free loopback port, over a home with published
    certificates, a CRL, an agency key and an operator key (generous rate limits)."""
    base = tmp_path_factory.mktemp("live")
    home = base / "var"
    broker = RedisServer(base / "redis").start()
    settings = Settings(home=home, redis_url=broker.url)
    ledger = wiring.ledger(settings)
    authority = SoftCA.create()
    ids = file_batch(ledger, base, "BTC", 4, seed=21)
    serials = [issue(ledger, authority, request_id, publish=True) for request_id in ids]
    repository = Repository(wiring.home(settings).repository)
    repository.publish_ca(authority.root, authority.issuing)
    for serial in serials:
        repository.publish(certificate(ledger, serial))
    publish_index(ledger, repository.root)
    revocation.issue_crl(ledger, authority.issuing, authority.issuing_key, repository.root, dt.datetime.now(dt.UTC))
    port = free_port()
    env = certfactory_env(home, CERTFACTORY_REDIS_URL=broker.url, CERTFACTORY_HTTP_ADDRESS=f"127.0.0.1:{port}",
                          CERTFACTORY_API_RATE="1000", CERTFACTORY_API_BURST="1000")
    log = (base / "server.log").open("w")
    server = subprocess.Popen([sys.executable, "-m", "certfactory.cli", "serve"], env=env, cwd=base, stdout=log,
                              stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            urllib.request.urlopen(f"{url}/openapi.json", timeout=1).close()
            break
        except OSError:
            if time.monotonic() > deadline or server.poll() is not None:
                server.kill()
                pytest.fail(f"the API server did not start: {(base / 'server.log').read_text()}")
            time.sleep(0.1)
    yield {"url": url, "operator": access.create_api_key(ledger, None, NOW),
           "agency": access.create_api_key(ledger, "BTC", NOW), "name": full_name(ledger, ids[0]),
           "request_id": ids[0], "batch_id": ledger.get_request(ids[0]).batch_id,  # type: ignore[union-attr]
           "serial": serials[0], "log": str(base / "server.log"), "base": str(base)}
    server.terminate()
    server.wait(10)
    broker.stop()


# Multipart parts are text on the wire: a "number" sent for the file is the same bytes as a
# valid string, so schemathesis' negative-data check on the upload reports requests the
# server cannot tell from valid ones. And a schema-valid upload is any bytes with any
# "signature": refusing one that is not the agency head's (400) is the point, so the
# positive-data check takes 400 there too.
_COMMON_CONFIG = """
[[operations]]
include-path = "/batches"
include-method = "POST"
checks.negative_data_rejection.enabled = false
checks.positive_data_acceptance.expected-statuses = ["2xx", "400", "401", "403", "404", "409", "429"]
"""
# With the agency's key, path parameters name real resources, so 200 answers are checked too.
_AGENCY_CONFIG = """
[[operations]]
include-path = "{path}"
parameters = {{ {name} = "{value}" }}
"""


def _schemathesis_config(live: dict[str, str], role: str, folder: Path) -> Path:
    text = _COMMON_CONFIG
    if role == "agency":
        for operation, name, value in (
                ("/requests/{request_id}", "request_id", live["request_id"]),
                ("/requests/{request_id}/activation", "request_id", live["request_id"]),
                ("/batches/{batch_id}", "batch_id", live["batch_id"]),
                ("/certificates/{serial}/revocation", "serial", live["serial"]),
                ("/repository/certs/{name}", "name", f"{live['serial']}.cer"),
                ("/repository/ca/{name}", "name", "issuing.pem"),
                ("/repository/crl/{name}", "name", "issuing.crl")):
            text += _AGENCY_CONFIG.format(path=operation, name=name, value=value)
    path = folder / f"schemathesis-{role}.toml"
    path.write_text(text)
    return path


@pytest.mark.integration
@pytest.mark.parametrize("role", ["operator", "agency"])
def test_schemathesis_finds_no_server_error_or_schema_violation(live: dict[str, str], role: str) -> None:
    """schemathesis drives every operation of the published OpenAPI against the live server
    with every check on (its default; `--checks` would override the one switched off above):
    no 5xx, no undocumented status, no response outside its schema, no ignored auth."""
    base = Path(live["base"])
    # One worker: schemathesis' coverage phase trips a CPython 3.11 AST error when threads compile at once.
    run = subprocess.run(
        [str(Path(sys.executable).parent / "schemathesis"), "--config-file",
         str(_schemathesis_config(live, role, base)), "run", f"{live['url']}/openapi.json",
         "--header", f"Authorization: Bearer {live[role]}", "--max-examples", "25",
         "--seed", "7", "--workers", "1", "--phases", "examples,coverage,fuzzing", "--suppress-health-check", "all",
         "--report", "junit", "--report-dir", str(base / f"schemathesis-{role}")],
        capture_output=True, text=True, timeout=900, cwd=base)  # its .schemathesis/ cache stays out of the tree
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:]
    assert "Traceback" not in Path(live["log"]).read_text()


def test_the_vietnamese_search_page_in_headless_chromium(live: dict[str, str], tmp_path: Path) -> None:
    """Chromium loads the page from the live server; the search is made as its form
    submits it (action and field read from the DOM Chromium built) with a name with
    diacritics; the result is in the DOM and a screenshot is saved."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.fail("chromium not found: install Debian's chromium package (`apt-get install -y chromium`, as root)")
    flags = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}"]

    def dom(url: str) -> str:
        done = subprocess.run([*flags, "--dump-dom", url], capture_output=True, text=True, timeout=120)
        assert done.returncode == 0 and "</html>" in done.stdout, done.stderr[-2000:]
        return done.stdout

    page_url = f"{live['url']}/repository/"
    page = dom(page_url)
    assert '<html lang="vi">' in page and "Kho công bố chứng thư số" in page and "Đang công bố 4" in page
    form = re.search(r'<form method="get" action="([^"]*)">.*?<input type="search" id="q" name="(\w+)"', page, re.S)
    assert form is not None, page[-2000:]
    search_url = urllib.parse.urljoin(page_url, form[1]) + "?" + urllib.parse.urlencode({form[2]: live["name"]})
    found = dom(search_url)
    assert "Tìm thấy 1 chứng thư số" in found and f"<td>{live['name']}</td>" in found, found[-2000:]
    assert not live["name"].isascii()
    screenshot = tmp_path / "repository-search.png"
    subprocess.run([*flags, f"--screenshot={screenshot}", "--window-size=1200,800", search_url], capture_output=True,
                   timeout=120)
    assert screenshot.exists() and screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert screenshot.stat().st_size > 10_000, "the screenshot looks blank"


def test_metrics_are_served_for_prometheus(live: dict[str, str]) -> None:
    """GET /metrics answers in Prometheus' text format with the ledger's and Redis' gauges
    (the counts themselves depend on what schemathesis revoked before)."""
    with urllib.request.urlopen(f"{live['url']}/metrics", timeout=10) as answer:
        body = answer.read().decode()
        assert answer.headers["Content-Type"].startswith("text/plain")
    requests = {state: float(count) for state, count in re.findall(r'^certfactory_requests\{state="(\w+)"\} (\S+)$',
                                                                    body, re.M)}
    assert sum(requests.values()) == 4 and {"published", "revoked"} <= requests.keys(), body[:2000]
    assert 'certfactory_exporter_source_up{source="redis"} 1.0' in body

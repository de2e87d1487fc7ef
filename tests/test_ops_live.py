"""Operations against a running pipeline: `certfactory serve` exposes every metric of the
host while `certfactory demo` issues, a real Prometheus scrapes it, and promtool checks
the live exposition."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from certfactory.embedded import free_port
from tests.conftest import certfactory_env, run_cli
from tests.test_monitoring import DASHBOARD, promtool

WORKER_METRICS = ("certfactory_stage_duration_seconds", "certfactory_stage_messages_total",
                  "certfactory_keygen_duration_seconds", "certfactory_sign_duration_seconds")
"""Families only the workers write (multiprocess files), so their presence proves `serve` merges them."""


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as response:
        return str(response.read().decode())


def _query(base: str, query: str) -> list[dict[str, Any]]:
    answer = json.loads(_get(f"{base}/api/v1/query?{urllib.parse.urlencode({'query': query})}"))
    assert answer["status"] == "success", answer
    return list(answer["data"]["result"])


def _wait_listening(url: str, child: subprocess.Popen[bytes], seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if child.poll() is not None:
            pytest.fail(f"{child.args} exited {child.returncode} before listening at {url}")
        try:
            _get(url)
            return
        except (urllib.error.URLError, ConnectionError):
            time.sleep(0.2)
    pytest.fail(f"nothing listening at {url} after {seconds} s")


def test_prometheus_scrapes_serve_during_a_demo_and_promtool_accepts_the_live_metrics(tmp_path: Path) -> None:
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.fail("prometheus not found: install Debian's prometheus package (`make test` does, as root)")
    home = tmp_path / "var"
    http = f"127.0.0.1:{free_port()}"
    env = certfactory_env(home, CERTFACTORY_HTTP_ADDRESS=http,
                          CERTFACTORY_DRAMATIQ_METRICS_ADDRESS=f"127.0.0.1:{free_port()}")
    run_cli(home, "init")
    children: list[subprocess.Popen[bytes]] = []
    try:
        serve = subprocess.Popen([sys.executable, "-m", "certfactory.cli", "serve"], env=env, cwd=tmp_path,
                                 stdout=subprocess.DEVNULL, stderr=(tmp_path / "serve.log").open("wb"))
        children.append(serve)
        _wait_listening(f"http://{http}/metrics", serve, 60)
        config = tmp_path / "prometheus.yml"
        config.write_text(json.dumps({"global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                                      "scrape_configs": [{"job_name": "certfactory",
                                                          "static_configs": [{"targets": [http]}]}]}))
        web = f"127.0.0.1:{free_port()}"
        children.append(subprocess.Popen(
            [binary, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
             f"--web.listen-address={web}", "--log.level=warn"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        _wait_listening(f"http://{web}/-/ready", children[-1], 60)
        # the demo publishes its 60 in seconds: a series Prometheus first sees at its final value
        # gives rate() nothing, so the demo starts once serve has been scraped
        deadline = time.monotonic() + 60
        while not _query(f"http://{web}", "certfactory_certificates_published_total"):
            if time.monotonic() > deadline:
                pytest.fail("Prometheus never scraped serve's /metrics")
            time.sleep(0.2)
        demo = subprocess.Popen([sys.executable, "-m", "certfactory.cli", "demo", "--count", "60", "--key-type",
                                 "ecdsa-p256"], env=env, cwd=tmp_path, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE)
        children.append(demo)
        query = json.loads(DASHBOARD.read_text())["panels"][0]["targets"][0]["expr"].replace("$__rate_interval", "10s")
        throughput, exposition = 0.0, ""
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and (throughput <= 0 or not exposition):
            time.sleep(0.5)
            if not exposition:
                live = _get(f"http://{http}/metrics")
                if all(f"\n{name}" in live for name in WORKER_METRICS):
                    exposition = live  # scraped mid-run: workers' and exporter's families together
            result = _query(f"http://{web}", query)
            throughput = float(result[0]["value"][1]) if result else 0.0
            if demo.poll() is not None and throughput <= 0:
                break
        out, err = demo.communicate(timeout=300)
        assert demo.returncode == 0, out.decode()[-2000:] + err.decode()[-2000:]
        assert throughput > 0, (f"Prometheus never saw a certificate published ({query}): "
                                f"{_query(f'http://{web}', 'certfactory_certificates_published_total[2m]')}")
        assert exposition, "serve never exposed the workers' metrics during the run"
        checked = promtool("check", "metrics", stdin=exposition)
        complaints = [line for line in (checked.stdout + checked.stderr).splitlines() if "certfactory_" in line]
        assert complaints == [], "\n".join(complaints)
        assert _query(f"http://{web}", 'up{job="certfactory"}')[0]["value"][1] == "1"
    finally:
        for child in reversed(children):
            if child.poll() is None:
                child.terminate()
                try:
                    child.wait(30)
                except subprocess.TimeoutExpired:
                    child.kill()

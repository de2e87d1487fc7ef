"""`certfactory loadtest` on the real parts (redis-server, dramatiq workers, SoftHSM2, the
ledger), small enough for the suite: its report's shape and sanity, and the capacity
model checked against a simulated-latency run."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import certfactory_env

pytestmark = pytest.mark.integration

STAGES = ("validate", "generate_key", "sign", "package", "await_activation", "activate", "publish", "end_to_end")
QUEUED = ("validate", "generate_key", "sign", "package", "await_activation", "publish")


def _run(home: Path, module: str, *args: str, timeout: float = 120) -> str:
    """Run one of the load-test commands as a user would (``certfactory loadtest`` / ``plan``).
    Idle workers poll every 100 ms: these runs are a few dozen requests, whose head and
    tail the default 500 ms backoff would make a matter of luck (the plan check once
    predicted 5.6 s for a 3.9 s run)."""
    env = certfactory_env(home, CERTFACTORY_WORKER_POLL_MS="100")
    result = subprocess.run([sys.executable, "-m", module, *args], env=env, capture_output=True,
                            text=True, timeout=timeout, cwd=home.parent, check=False)
    assert result.returncode == 0, f"{module} {' '.join(args)} exited {result.returncode}:\n{result.stdout}\n" \
                                   f"{result.stderr}"
    return result.stdout


def _loadtest(tmp_path: Path, name: str, *args: str) -> dict[str, Any]:
    out = tmp_path / f"{name}.json"
    _run(tmp_path / name, "certfactory.loadtest", "--home", str(tmp_path / name), "--json", str(out), *args)
    return json.loads(out.read_text())


def test_loadtest_reports_throughput_ceiling_stages_and_memory(tmp_path: Path, tools: dict[str, str]) -> None:
    """20 P-256 requests on 2 station processes: every request published, an efficiency
    that makes sense, every stage timed, every worker process's memory sampled, a plot,
    and the ceiling with the device's own work beside the plain one."""
    plot = tmp_path / "run.png"
    report = _loadtest(tmp_path, "run", "--count", "20", "--key-type", "ecdsa-p256", "--processes", "2",
                       "--plot", str(plot), "--device-work")
    for key in ("key_type", "count", "end_to_end_per_second", "ceiling_per_second", "efficiency", "stages",
                "peak_rss_mb", "machine", "keygen_ms", "sign_ms", "calibration", "memory", "throughput"):
        assert key in report, key
    assert report["key_type"] == "ecdsa-p256" and report["count"] == 20 and report["published"] == 20
    assert report["end_to_end_per_second"] > 0 and report["ceiling_per_second"] > 0
    assert 0 < report["efficiency"] <= 1.5
    assert set(STAGES) <= set(report["stages"])
    for stage in STAGES:
        assert report["stages"][stage]["between_transitions_ms"]["count"] == 20, stage
    for stage in QUEUED:
        row = report["stages"][stage]
        assert row["work_ms"]["count"] >= 20 and row["work_ms"]["p50"] > 0, stage
        assert row["queue_wait_ms"]["p99"] >= row["queue_wait_ms"]["p50"] >= 0, stage
    workers = {label: mb for label, mb in report["peak_rss_mb"].items() if "-worker-" in label}
    assert len(workers) == 2 + 2 + 1 + 1, report["peak_rss_mb"]  # station ×2, packaging ×2, CA ×1, general ×1
    assert all(mb > 0 for mb in report["peak_rss_mb"].values())
    assert report["keygen_ms"]["ceiling"]["count"] == 20 and report["keygen_ms"]["pipeline"]["count"] == 20
    # the ceiling ran half before the pipeline and half after it
    assert len(report["ceiling"]["per_second_by_run"]) == 2 and report["ceiling"]["iterations"] == 20
    assert report["sign_ms"]["pipeline"]["p50"] > 0
    assert report["machine"]["cores"] and report["machine"]["softhsm2"] and report["machine"]["dramatiq"]
    processor = report["processor_ms_per_certificate"]  # every pool, the broker and the agency: each did work
    assert set(processor["pipeline"]) == {"station", "packager", "ca", "general", "redis", "agency"}, processor
    assert all(ms > 0 for ms in processor["pipeline"].values()) and processor["ceiling"] > 0
    # the pipeline does all the ceiling does (key generation, signature) and more
    assert processor["pipeline"]["station"] + processor["pipeline"]["ca"] > 0.5 * processor["ceiling"]
    # the ceiling with the device's own work (PINs, proof, certificate + chain written) does
    # more on each device than the plain one: more processor per iteration, no faster
    floor = report["device_work_ceiling"]
    assert floor["per_second"] > 0 and floor["keygen_ms"]["count"] == 20
    assert floor["processor_ms_per_iteration"] > processor["ceiling"], (floor, processor)
    assert floor["of_ceiling"] < 1.2 and floor["pipeline_efficiency"] > 0
    assert plot.read_bytes().startswith(b"\x89PNG")
    assert report["warnings"] == []
    # the device tokens were in RAM (removed at the end), the ledger and envelopes in the home
    storage = report["device_storage"]
    assert storage["where"] == "ram" and storage["filesystem"] == "tmpfs", storage
    assert not Path(storage["path"]).exists()
    assert not (tmp_path / "run" / "devices").exists() and not (tmp_path / "run" / "station").exists()
    assert len(list((tmp_path / "run" / "pin-envelopes").glob("*.json"))) >= 20


def test_plan_predicts_a_simulated_latency_load_test_within_a_quarter(tmp_path: Path, tools: dict[str, str]) -> None:
    """Calibrated on one simulated-latency run (0.2 s per keygen, 10 requests), `plan`
    with the station processes as ports and round-the-clock hours predicts the end-to-end
    time of another (0.4 s per keygen, 16 requests) within 25%. Both run back to back,
    so whatever else loads the machine loads both."""
    calibration = _loadtest(tmp_path, "calibration", "--count", "10", "--key-type", "ecdsa-p256", "--processes",
                            "2", "--keygen-delay", "0.2", "--ceiling-count", "4", "--device-storage", "disk")
    assert calibration["warnings"] == [], calibration["warnings"]
    # this one kept its device tokens in the home, on disk: the packaged devices are there
    assert calibration["device_storage"]["where"] == "disk"
    assert len(list((tmp_path / "calibration" / "devices").iterdir())) >= 10
    measured = _loadtest(tmp_path, "measured", "--count", "16", "--key-type", "ecdsa-p256", "--processes", "2",
                         "--keygen-delay", "0.4", "--ceiling-count", "4")
    assert measured["warnings"] == [], measured["warnings"]
    assert measured["published"] == 16
    keygen = 0.4 + calibration["calibration"]["keygen_seconds"]
    sign = calibration["calibration"]["sign_seconds"]
    plan = json.loads(_run(tmp_path / "plan", "certfactory.plan", "--requests", "16", "--stations", "1", "--ports",
                           "2", "--keygen-seconds", f"{keygen:.4f}", "--sign-seconds", f"{sign:.4f}", "--hours", "24",
                           "--calibration", str(tmp_path / "calibration.json"), "--json"))
    predicted, actual = plan["batch_seconds"], measured["end_to_end_seconds"]
    assert abs(actual - predicted) <= 0.25 * actual, f"plan {predicted:.2f} s, load test {actual:.2f} s"
    # and the ceiling saw the same simulated device: at most 2 ports / 0.4 s
    assert measured["ceiling_per_second"] <= 2 / 0.4

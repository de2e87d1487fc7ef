"""The load test's report: the figures assembled into one JSON-able dict, and the short
table printed at the end of a run."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import time
from pathlib import Path
from typing import Any

from rich.console import Console

from certfactory import host, loadstats

KEYGEN_DELAY_VARIABLE = "CERTFACTORY_SIMULATED_KEYGEN_SECONDS"
SIGN_DELAY_VARIABLE = "CERTFACTORY_SIMULATED_SIGN_SECONDS"


def code_version() -> dict[str, Any]:
    """The commit of the code that ran, and the files changed since (the hot path moves)."""
    repository = Path(__file__).resolve().parent.parent

    def git(*args: str) -> str:
        try:
            result = subprocess.run(["git", *args], cwd=repository, capture_output=True, text=True, timeout=10,
                                    check=False)
        except (OSError, subprocess.TimeoutExpired):
            return ""
        return result.stdout.rstrip() if result.returncode == 0 else ""  # porcelain lines start with a space

    changed = git("status", "--porcelain", "--untracked-files=no")
    return {"commit": git("rev-parse", "--short", "HEAD") or None,
            "modified": [line[3:] for line in changed.splitlines() if len(line) > 3]}


def write_benchmark(name: str, result: dict[str, Any], started: float, json_file: Path | None) -> None:
    """A ``bench/`` script's result with its duration, the machine and the code: printed,
    and written to ``json_file`` when given."""
    text = json.dumps({"benchmark": name, **result, "seconds": round(time.time() - started, 1),
                       "machine": host.machine(), "code": code_version()}, indent=1, ensure_ascii=False)
    if json_file:
        json_file.parent.mkdir(parents=True, exist_ok=True)
        json_file.write_text(text + "\n")
    print(text)


def build(count: int, key_type: str, processes: int, submitted: float, requests: dict[str, dict[str, float]],
            counts: dict[str, int], probe: list[dict[str, Any]], ceiling: dict[str, Any],
            sampler: host.MemorySampler | None, keygen_delay: float, sign_delay: float) -> dict[str, Any]:
    """The report of one run (the keys are documented in ``certfactory.loadtest``)."""
    published = sorted(t["published"] for t in requests.values() if "published" in t)
    wall = (published[-1] - submitted) if published else 0.0
    rate = len(published) / wall if wall else 0.0
    cut = len(published) // 10
    middle = published[cut:len(published) - cut] if cut else published
    middle_rate = (len(middle) - 1) / (middle[-1] - middle[0]) if len(middle) > 1 and middle[-1] > middle[0] else rate
    stages = loadstats.stage_table(requests, probe)
    warnings = []
    gk_work = stages["generate_key"]["work_ms"].get("p50", 0)
    if keygen_delay and gk_work < keygen_delay * 1000 * 0.9:
        warnings.append(f"the workers did not apply {KEYGEN_DELAY_VARIABLE} (generate_key work p50 {gk_work} ms): "
                        "is the station running this code?")
    sign_work = stages["sign"]["work_ms"].get("p50", 0)
    if sign_delay and sign_work < sign_delay * 1000 * 0.9:
        warnings.append(f"the workers did not apply {SIGN_DELAY_VARIABLE} (sign work p50 {sign_work} ms): "
                        "is the CA signer running this code?")
    memory = sampler.report(submitted) if sampler else {"peak_rss_mb": {}, "memory": {}}
    return {
        "key_type": key_type, "count": count, "processes": processes,
        "simulated_delay_seconds": {"keygen": keygen_delay, "sign": sign_delay},
        "published": len(published), "states": counts,
        "end_to_end_per_second": round(rate, 3),
        "end_to_end_seconds": round(wall, 3),
        "end_to_end_method": "published / (last 'published' audit commit − time just before submit)",
        "middle_80_per_second": round(middle_rate, 3),
        "ceiling_per_second": ceiling["per_second"],
        "efficiency": round(rate / ceiling["per_second"], 3) if ceiling["per_second"] else None,
        "stages": stages,
        "keygen_ms": {"ceiling": ceiling["keygen_ms"], "pipeline": loadstats.summary(
            loadstats.token_times(probe, "keygen"), 1000, 3)},
        "sign_ms": {"ceiling": ceiling["sign_ms"], "pipeline": loadstats.summary(
            loadstats.token_times(probe, "sign"), 1000, 3)},
        "ceiling": {k: v for k, v in ceiling.items() if k not in ("keygen_ms", "sign_ms")},
        "calibration": loadstats.calibration(requests, probe, submitted, processes, keygen_delay),
        "throughput": loadstats.throughput_series(requests, submitted),
        **memory,
        "warnings": warnings,
        "code": code_version(),
        "measured_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }


def processor_per_certificate(seconds: dict[str, float], agency_seconds: float, published: int,
                              ceiling: dict[str, Any]) -> dict[str, Any]:
    """Processor time per published certificate, by pool (its dramatiq processes; ``redis``
    is the broker, ``agency`` this process), against the ceiling's per iteration: where the
    pipeline's time goes beyond the token work the ceiling does."""
    pools: dict[str, float] = {}
    for label, value in seconds.items():
        pool = label.split("-", 1)[0]
        pools[pool] = pools.get(pool, 0.0) + value
    pools["agency"] = agency_seconds
    per = {pool: round(1000 * value / published, 2) for pool, value in pools.items()} if published else {}
    return {"pipeline": per, "pipeline_total": round(sum(per.values()), 2),
            "ceiling": ceiling.get("processor_ms_per_iteration"),
            "method": "user + system time of each process (and its reaped children) from submission to the last "
                      "publication, over published certificates; the ceiling's loop time in its processes over "
                      "iterations"}


def load_adjusted(result: dict[str, Any]) -> float | None:
    """The efficiency had the rest of the machine taken as many cores during the pipeline
    as during the ceiling: each phase's rate scaled by the cores left to it. A rough
    correction, for CPU-bound phases; the measured ``efficiency`` stays the figure."""
    cpu, cores = result["machine"].get("cores_busy"), result["machine"].get("cores")
    if not cpu or not cores or not result.get("efficiency"):
        return None
    left = {phase: max(0.1, cores - figures["cores_used_by_others"]) for phase, figures in cpu.items()}
    return round(result["efficiency"] * left["ceiling"] / left["pipeline"], 3)


def device_work(result: dict[str, Any], floor: dict[str, Any]) -> dict[str, Any]:
    """The ceiling with the device's own work (``certfactory.ceiling``, ``device_work``):
    its rate against the plain ceiling, and the pipeline's rate against it (how close the
    queues and the ledger come to free)."""
    rate = floor["per_second"]
    return {
        "per_second": rate, "per_second_by_run": floor.get("per_second_by_run"),
        "of_ceiling": round(rate / result["ceiling_per_second"], 3) if result["ceiling_per_second"] else None,
        "pipeline_efficiency": round(result["end_to_end_per_second"] / rate, 3) if rate else None,
        "processor_ms_per_iteration": floor.get("processor_ms_per_iteration"),
        "keygen_ms": floor["keygen_ms"], "method": floor["method"],
    }


def print_summary(console: Console, result: dict[str, Any]) -> None:
    """The headline figures, the stage table and peak memory."""
    console.print(f"[bold]{result['published']}/{result['count']} published[/] in {result['end_to_end_seconds']} s: "
                  f"end-to-end {result['end_to_end_per_second']}/s (middle 80%: {result['middle_80_per_second']}/s), "
                  f"ceiling {result['ceiling_per_second']}/s → [bold]efficiency {result['efficiency']}[/] "
                  f"(adjusted for the rest of the machine's load: {result.get('efficiency_load_adjusted')})")
    runs, storage = result.get("ceiling", {}).get("per_second_by_run") or [], result.get("device_storage") or {}
    if len(runs) > 1:
        console.print(f"the ceiling's runs before and after the pipeline: {', '.join(map(str, runs))}/s")
    if storage:
        console.print(f"device tokens in {storage['path']} ({storage.get('filesystem') or '?'})")
    floor = result.get("device_work_ceiling")
    if floor:
        console.print(f"ceiling with the device's own work (PINs, proof, certificate + chain written) "
                      f"{floor['per_second']}/s = {floor['of_ceiling']} of the ceiling; the pipeline reaches "
                      f"[bold]{floor['pipeline_efficiency']}[/] of it")
    console.print(f"{'stage':>17} {'between p50/p95/p99 ms':>26} {'wait p50/p95':>16} {'work p50/p95 ms':>16}")
    for stage, row in result["stages"].items():
        b, w, k = row["between_transitions_ms"], row.get("queue_wait_ms", {}), row.get("work_ms", {})
        console.print(f"{stage:>17} {b.get('p50', '-'):>8} {b.get('p95', '-'):>8} {b.get('p99', '-'):>8} "
                      f"{w.get('p50', '-'):>8} {w.get('p95', '-'):>7} {k.get('p50', '-'):>8} {k.get('p95', '-'):>7}")
    peak = result["peak_rss_mb"]
    if peak:
        console.print("peak RSS MB: " + ", ".join(f"{label} {mb}" for label, mb in peak.items()))
    processor = result.get("processor_ms_per_certificate")
    if processor and processor.get("pipeline"):
        console.print(f"processor ms per certificate: pipeline {processor['pipeline_total']} ("
                      + ", ".join(f"{pool} {ms}" for pool, ms in processor["pipeline"].items())
                      + f"), ceiling {processor['ceiling']}")
    cpu = result.get("machine", {}).get("cores_busy")
    if cpu:
        console.print("cores busy (this run / everything else): " + "; ".join(
            f"{phase} {c['cores_used_by_run']} / {c['cores_used_by_others']}" for phase, c in cpu.items()))
    for warning in result["warnings"]:
        console.print(f"[yellow]warning[/]: {warning}")



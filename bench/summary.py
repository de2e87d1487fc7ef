"""The standard runs' figures as a Markdown table (bench/standard_runs.sh writes it to
bench/results/SUMMARY.md; the README's "Measured throughput" section quotes it).

    .venv/bin/python bench/summary.py bench/results
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any


def _load(folder: Path, name: str) -> dict[str, Any] | None:
    path = folder / name
    return json.loads(path.read_text()) if path.exists() else None


def _runs(ceiling: dict[str, Any]) -> str:
    """The rates of a ceiling's runs before and after the pipeline, when it had two."""
    runs = ceiling.get("per_second_by_run") or []
    return f" ({', '.join(map(str, runs))})" if len(runs) > 1 else ""


def main() -> None:
    folder = Path(sys.argv[1] if len(sys.argv) > 1 else "bench/results")
    lines = ["| run | certificates | end-to-end /s | ceiling /s (runs before, after) | efficiency "
             "| peak RSS per worker (MB) "
             "| cores the rest of the machine took (pipeline / ceiling) | device tokens |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    machine: dict[str, Any] | None = None
    for name in ("loadtest-rsa2048.json", "loadtest-ecdsa-p256.json", "loadtest-ecdsa-p256-disk.json",
                 "loadtest-memory-2000.json"):
        run = _load(folder, name)
        if run is None:
            continue
        machine = machine or run["machine"]
        workers = {k: v for k, v in run["peak_rss_mb"].items() if "-worker-" in k}
        others = run["machine"].get("cores_busy", {})
        lines.append(
            f"| {name.removesuffix('.json')} ({run['key_type']}, {run['processes']} processes) | {run['published']} "
            f"| {run['end_to_end_per_second']} | {run['ceiling_per_second']}{_runs(run['ceiling'])} "
            f"| **{run['efficiency']:.0%}** "
            f"| max {max(workers.values(), default=0)} (growth after warm-up: max "
            f"{max(run['memory'].get('growth_after_warmup_mb', {}).values(), default=0)}) "
            f"| {others.get('pipeline', {}).get('cores_used_by_others', '?')} / "
            f"{others.get('ceiling', {}).get('cores_used_by_others', '?')} "
            f"| {run.get('device_storage', {}).get('filesystem') or 'home'} |")
    floors = [(name, run) for name in ("loadtest-rsa2048.json", "loadtest-ecdsa-p256.json",
                                       "loadtest-ecdsa-p256-disk.json")
              if (run := _load(folder, name)) and run.get("device_work_ceiling")]
    if floors:
        lines += ["", "The ceiling with the device's own work in its loop (PINs set, proof of possession, certificate "
                  "and chain written to the device), measured in the same runs:", "",
                  "| run | device-work ceiling /s | of the plain ceiling | pipeline against it | its processor ms "
                  "per device |", "| --- | --- | --- | --- | --- |"]
        for name, run in floors:
            floor = run["device_work_ceiling"]
            lines.append(f"| {name.removesuffix('.json')} | {floor['per_second']}{_runs(floor)} "
                         f"| {floor['of_ceiling']:.0%} "
                         f"| **{floor['pipeline_efficiency']:.0%}** | {floor['processor_ms_per_iteration']} |")
    processor = [(name, run["processor_ms_per_certificate"]) for name in ("loadtest-rsa2048.json",
                 "loadtest-ecdsa-p256.json", "loadtest-ecdsa-p256-disk.json")
                 if (run := _load(folder, name)) and run.get("processor_ms_per_certificate")]
    if processor:
        lines += ["", "Processor time per certificate (ms), by pool, against the ceiling's per iteration:", "",
                  "| run | station | packager | CA | general | Redis | agency | pipeline | ceiling |",
                  "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
        for name, figures in processor:
            pools = figures["pipeline"]
            lines.append(f"| {name.removesuffix('.json')} | " + " | ".join(
                str(pools.get(pool, "-")) for pool in ("station", "packager", "ca", "general", "redis", "agency"))
                + f" | {figures['pipeline_total']} | {figures['ceiling']} |")
    steps = [(kt, where, run) for kt in ("rsa2048", "ecdsa-p256") for where in ("ram", "disk")
             if (run := _load(folder, f"device_floor-{kt}-{where}.json"))]
    if steps:
        lines += ["", "The device's own work beyond the ceiling's, step by step (bench/device_floor.py, one process, "
                  "processor ms per device), and the efficiency it leaves any pipeline with its queues and ledger "
                  "free:", "", "| key, device tokens | ceiling steps | device's work beyond | bound |",
                  "| --- | --- | --- | --- |"]
        for kt, where, run in steps:
            lines.append(f"| {kt}, {where} ({run['device_storage']['filesystem']}) | {run['ceiling_processor_ms']} "
                         f"| {run['device_work_beyond_ceiling_ms']} | **{run['efficiency_bound']:.0%}** |")
    hops = [run for floor in (0, 100) if (run := _load(folder, f"hop_cost-floor{floor}.json"))]
    if hops:
        lines.append("")
        lines.append("One queue hop with nothing in the stage (bench/hop_cost.py, worker + Redis + sender, processor "
                     "ms per message): " + "; ".join(
                         f"{run['rate_per_second']:g} messages/s, poll floor {run['poll_floor_ms']} ms: "
                         f"**{run['processor_ms_per_hop']['total']}**" for run in hops) + ".")
    burst = _load(folder, "hop_cost-burst.json")
    if burst and "drained_per_second" in burst:
        lines.append("")
        lines.append(f"A burst of {burst['messages']} messages through one worker thread (prefetch 4, poll floor "
                     f"{burst['poll_floor_ms']} ms): drained at **{burst['drained_per_second']}/s**.")
    plan = _load(folder, "plan_check.json")
    if plan:
        lines.append("")
        lines.append(f"Plan check ({plan['key_type']}, simulated keygen {plan['measured_run']['keygen_delay']} s, "
                     f"{plan['measured_run']['count']} requests): plan {plan['plan']['batch_seconds']:.1f} s, load "
                     f"test {plan['measured_run']['end_to_end_seconds']:.1f} s, error **{plan['error']:+.1%}**.")
    growth = _load(folder, "station_growth.json")
    if growth:
        lines.append("")
        lines.append(f"Station growth ({growth['key_type']}, {growth['devices']} devices, ejected): keygen p50 "
                     f"{growth['keygen_ms_first']['p50']} ms for the first 100 devices, "
                     f"{growth['keygen_ms_last']['p50']} ms for the last 100 (ratio "
                     f"{growth['keygen_last_over_first_p50']}).")
    if machine:
        lines.append("")
        lines.append(f"Machine: {machine['cores']} cores, {machine['cpu']}; Python {machine['python']}, "
                     f"{machine['softhsm2']}, Redis {machine['redis_server']}, dramatiq {machine['dramatiq']}, "
                     f"cryptography {machine['cryptography']}.")
    print("\n".join(lines))


if __name__ == "__main__":
    main()

"""`certfactory plan` against a simulated-latency load test (issue 4: within 15%).

Two load tests with the device token slowed down as a USB token is
(CERTFACTORY_SIMULATED_KEYGEN_SECONDS, applied by the station itself): the first
calibrates the model (its measured stage overheads), the second — another delay and
another batch size — is what the plan must predict. ``plan`` gets the second run's
simulated keygen (plus SoftHSM2's own keygen time from the calibration run), one station
with as many ports as station processes, round-the-clock hours. The calibration run is
kept as bench/results/loadtest-simulated.json, which `certfactory plan` uses by default.

    .venv/bin/python bench/plan_check.py --json bench/results/plan_check.json
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path


def certfactory(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "certfactory.cli", *args], check=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--key-type", default="rsa2048")
    parser.add_argument("--calibrate", default="40:1.0", help="COUNT:KEYGEN_DELAY of the calibration run")
    parser.add_argument("--measure", default="60:2.0", help="COUNT:KEYGEN_DELAY of the run the plan predicts")
    parser.add_argument("--json", type=Path, required=True)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="certfactory-plan-check-") as scratch:
        folder = Path(scratch)
        runs = {}
        for name, spec in (("calibration", args.calibrate), ("measured", args.measure)):
            count, delay = spec.split(":")
            out = folder / f"{name}.json"
            certfactory("loadtest", "--count", count, "--key-type", args.key_type, "--processes", str(args.processes),
                         "--keygen-delay", delay, "--ceiling-count", str(4 * args.processes), "--json", str(out))
            runs[name] = json.loads(out.read_text())
        calibration, measured = runs["calibration"], runs["measured"]
        keygen = measured["simulated_delay_seconds"]["keygen"] + calibration["calibration"]["keygen_seconds"]
        sign = calibration["calibration"]["sign_seconds"]
        plan = subprocess.run(
            [sys.executable, "-m", "certfactory.cli", "plan", "--requests", str(measured["count"]), "--stations", "1",
             "--ports", str(args.processes), "--keygen-seconds", f"{keygen:.4f}", "--sign-seconds", f"{sign:.4f}",
             "--hours", "24", "--calibration", str(folder / "calibration.json"), "--json"],
            check=True, capture_output=True, text=True)
        predicted = json.loads(plan.stdout)
        # the calibration `certfactory plan` picks up by default: a run in real stations' regime
        args.json.parent.mkdir(parents=True, exist_ok=True)
        (args.json.parent / "loadtest-simulated.json").write_text((folder / "calibration.json").read_text())
    actual = measured["end_to_end_seconds"]
    error = (predicted["batch_seconds"] - actual) / actual
    result = {
        "benchmark": "plan_check", "key_type": args.key_type, "processes": args.processes,
        "calibration_run": {"count": calibration["count"], "keygen_delay": calibration["simulated_delay_seconds"]["keygen"],
                            "calibration": calibration["calibration"], "end_to_end_seconds": calibration["end_to_end_seconds"]},
        "measured_run": {"count": measured["count"], "keygen_delay": measured["simulated_delay_seconds"]["keygen"],
                         "end_to_end_seconds": actual, "warnings": measured["warnings"]},
        "plan": {"keygen_seconds": round(keygen, 4), "sign_seconds": round(sign, 4),
                 "batch_seconds": predicted["batch_seconds"]},
        "error": round(error, 4), "within_15_percent": abs(error) <= 0.15,
        "machine": measured["machine"], "code": measured["code"],
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=1) + "\n")
    print(f"plan {predicted['batch_seconds']:.1f} s, load test {actual:.1f} s: error {error:+.1%}")


if __name__ == "__main__":
    main()

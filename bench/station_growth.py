"""Device stations do not slow down as devices accumulate (issue 4, DESIGN.md §2).

Runs the station's real per-device path (``factory.devices.Station``: blank devices
plugged in a port-full at a time, personalisation, key generation on the device,
ejection) for N devices on one SoftHSM2 station, and compares the key generation of the
first devices with the last. Packaged devices leave the station's token directory, so
the station never holds more than its ports' worth of tokens and device N's key is as
fast as device 1's. With ``--keep-on-station`` the devices are not ejected: the control
run, showing what ejection saves (SoftHSM2 re-reads every token of its directory when
the slots are re-read).

    .venv/bin/python bench/station_growth.py --devices 2000 --json bench/results/station_growth.json
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from certfactory import loadreport
from certfactory.settings import SOFTHSM2_MODULE
from certfactory.loadstats import summary
from factory import softhsm, tokens
from factory.devices import Station

WINDOW = 100  # devices per bucket of the series


def run(devices: int, key_type: str, ports: int, keep: bool, home: Path) -> dict[str, object]:
    """Personalise and key ``devices`` devices one after another; timings in seconds."""
    station = Station("bench", home, SOFTHSM2_MODULE, ports)
    station.prepare()
    os.environ["SOFTHSM2_CONF"] = str(station.config)  # before the module is first loaded
    known: set[str] = set()
    blanks: list[tuple[str, str]] = []
    keygen: list[float] = []
    cycle: list[float] = []
    provision: list[float] = []
    for index in range(devices):
        if not blanks:
            started = time.perf_counter()
            blanks = station.provision_blank(ports, known)
            provision.append(time.perf_counter() - started)
            known.update(serial for serial, _ in blanks)
        serial, token_dir = blanks.pop(0)
        started = time.perf_counter()
        station.personalise(serial)
        key_started = time.perf_counter()
        station.generate_key(serial, key_type, tokens.key_id_for(f"bench-{index}"), f"cf-bench-{index}",
                             lambda public: b"bench")
        keygen.append(time.perf_counter() - key_started)
        if not keep:
            station.eject(serial, token_dir)
        cycle.append(time.perf_counter() - started)
    first, last = keygen[:WINDOW], keygen[-WINDOW:]
    return {
        "devices": devices, "key_type": key_type, "ports": ports, "ejected": not keep,
        "tokens_on_station_at_end": len(softhsm.token_directories(station.tokendir)),
        "keygen_ms_first": summary(first, 1000, 3), "keygen_ms_last": summary(last, 1000, 3),
        "keygen_last_over_first_p50": round(summary(last)["p50"] / summary(first)["p50"], 3),  # type: ignore[operator]
        "cycle_ms_first": summary(cycle[:WINDOW], 1000, 3), "cycle_ms_last": summary(cycle[-WINDOW:], 1000, 3),
        "provision_ms_per_port_full": summary(provision, 1000, 3),
        "keygen_p50_ms_per_100_devices": [summary(keygen[i:i + WINDOW], 1000, 3)["p50"]
                                          for i in range(0, devices, WINDOW)],
        "cycle": "personalise (PINs) + keygen on the device + eject (moving its token off the station)",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--devices", type=int, default=2000)
    parser.add_argument("--key-type", default="ecdsa-p256", choices=sorted(tokens.KEY_SPECS))
    parser.add_argument("--ports", type=int, default=8)
    parser.add_argument("--keep-on-station", action="store_true", help="control run: do not eject devices")
    parser.add_argument("--json", type=Path, help="write the result here")
    args = parser.parse_args()
    if args.devices < 2 * WINDOW:
        parser.error(f"--devices must be at least {2 * WINDOW} (first and last {WINDOW} are compared)")
    with tempfile.TemporaryDirectory(prefix="certfactory-station-growth-") as home:
        started = time.time()
        result = run(args.devices, args.key_type, args.ports, args.keep_on_station, Path(home))
    loadreport.write_benchmark("station_growth", result, started, args.json)


if __name__ == "__main__":
    main()

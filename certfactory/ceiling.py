"""The raw ceiling: key generation on a fresh device token plus the CA's signature, in a
plain loop with no queue and no ledger — what P processes of this host can issue at most.

What the pipeline must do on the tokens per device, and nothing else. Before the timing
(as blank devices arrive from the vendor) :func:`run_ceiling` prepares, for each of the
P processes, a token directory holding a copy of the CA token (the same issuing key and
PIN) and one blank device token per iteration (user PIN set), then starts P processes of
this module (``python -m certfactory.ceiling``) with SOFTHSM2_CONF pointing at their
own directory. Each logs in to the CA token once, runs two untimed iterations, says
``ready``, waits for ``go`` so all start together, then loops, each iteration on the
next fresh device:

    open a session on the device and log in (every device needs its own login)
    generate a key pair on it (stored, sensitive, like a subscriber's), close the session
    build the subscriber certificate over it (the production profile)
    sign it with the CA key on the CA token

Not in the loop (the pipeline's overhead, to be made nearly free): creating blank
devices, setting the subscriber's PINs, writing the certificate and chain to the
device, ejecting it, envelopes and manifests, queues and the ledger. Simulated device
latency is added here explicitly (after keygen and after the signature), never through
the environment.

``device_work=True`` (``certfactory loadtest --device-work``) adds to each iteration the
token work DESIGN.md §2 asks of every device and that no queue or ledger can spare (step
by step in ``bench/device_floor.py``): the SO and user PINs set, the proof of possession
signed with the new key, the certificate and the CA chain written to the device. Its
rate bounds any pipeline's from above more tightly than the ceiling's: what the pipeline
loses against it is overhead, what it loses between the two is the device's own work.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from certfactory import wiring
from certfactory.loadstats import summary
from certfactory.settings import Settings
from factory import softhsm
from factory.errors import CertFactoryError

DEVICE_SO_PIN = "ceiling-so-0000"
DEVICE_USER_PIN = "ceiling-user-0000"
DEVICE_LABEL = "ceiling-blank"
WARM_UP = 2


def _iterate(device: Any, key_type: str, record: Any, chain: Any, policy: Any, ca_key: Any,
             keygen_delay: float, sign_delay: float, device_work: bool = False) -> tuple[float, float, float]:
    """Login + keygen on one fresh device, build, CA signature; returns the three durations.
    With ``device_work``, also the PINs, the proof of possession and the certificate and
    chain onto the device (timed with keygen, the device's share)."""
    from cryptography.hazmat.primitives.serialization import Encoding

    from factory import ca as ca_profile
    from factory import possession, tokens

    root, issuing = chain
    key_id, user_pin = os.urandom(16), DEVICE_USER_PIN
    t0 = time.perf_counter()
    if device_work:  # the subscriber's own PINs, as Station.personalise sets them
        user_pin = "floor-user-" + os.urandom(4).hex()
        with device.open(rw=True, so_pin=DEVICE_SO_PIN) as session:
            session.set_pin(DEVICE_SO_PIN, "floor-so-" + os.urandom(8).hex())
            session.init_pin(user_pin)
    with device.open(rw=True, user_pin=user_pin) as session:
        public_der = tokens.generate_keypair(session, key_type, key_id, "ceiling")
        if device_work:  # proof of possession, as Station.generate_key makes it
            private = tokens.find_private_key(session, key_id=key_id)
            possession.prove(tokens.token_private_key(session, private, public_der), public_der)
    if keygen_delay:
        time.sleep(keygen_delay)
    t1 = time.perf_counter()
    builder = ca_profile.subscriber_builder(record, public_der, ca_profile.new_serial(), issuing,
                                            dt.datetime.now(dt.UTC), policy)
    t2 = time.perf_counter()
    certificate = ca_profile.sign(builder, ca_key)
    if sign_delay:
        time.sleep(sign_delay)
    t3 = time.perf_counter()
    if device_work:  # certificate and chain onto the device, as Station.write_certificates does
        with device.open(rw=True, user_pin=user_pin) as session:
            tokens.store_certificate(session, certificate.public_bytes(Encoding.DER), key_id=key_id,
                                     label="ceiling", subject=certificate.subject.public_bytes())
            for ca_certificate, label in ((issuing, "issuing-ca"), (root, "root-ca")):
                tokens.store_certificate(session, ca_certificate.public_bytes(Encoding.DER), key_id=label.encode(),
                                         label=label, subject=ca_certificate.subject.public_bytes())
    return t1 - t0 + time.perf_counter() - t3, t2 - t1, t3 - t2


def worker(home: Path, key_type: str, count: int, keygen_delay: float, sign_delay: float,
           progress: Path, device_work: bool = False) -> dict[str, Any]:
    """One ceiling process (SOFTHSM2_CONF already names its own token directory)."""
    from factory import ca as ca_profile
    from factory import ceremony, tokens
    from factory.synthetic import generate_requests

    settings = Settings(home=home)
    ca_key = wiring.ca_token(settings).key(ca_profile.ISSUING_LABEL)
    chain = ceremony.CAFiles(wiring.home(settings).ca).load()
    policy = wiring.policy(settings)
    record = generate_requests(1, seed=os.getpid(), key_type=key_type)[0]
    library = tokens.library(settings.device_pkcs11_module)
    devices = [slot.get_token() for slot in library.get_slots(token_present=True)]
    devices = [device for device in devices if device.label == DEVICE_LABEL]
    if len(devices) < count + WARM_UP:
        raise CertFactoryError(f"the ceiling found {len(devices)} blank devices, needs {count + WARM_UP}")
    for device in devices[:WARM_UP]:
        _iterate(device, key_type, record, chain, policy, ca_key, keygen_delay, sign_delay, device_work)
    print("ready", flush=True)
    sys.stdin.readline()
    keygen: list[float] = []
    build: list[float] = []
    sign: list[float] = []
    started, cpu = time.time(), time.process_time()
    last_report = 0.0
    for done, device in enumerate(devices[WARM_UP:WARM_UP + count], start=1):
        durations = _iterate(device, key_type, record, chain, policy, ca_key, keygen_delay, sign_delay,
                             device_work)
        for bucket, value in zip((keygen, build, sign), durations, strict=True):
            bucket.append(value)
        if time.monotonic() - last_report > 0.25 or done == count:
            progress.write_text(str(done))
            last_report = time.monotonic()
    return {"iterations": count, "started": started, "ended": time.time(), "cpu": time.process_time() - cpu,
            "keygen": keygen, "build": build, "sign": sign}


def _prepare(settings: Settings, shares: list[int]) -> Path:
    """The ceiling's token directories: per process, a copy of the CA token and one blank
    device per iteration (warm-up included), made before the timing starts. They live where
    the station keeps its devices (``device_storage``): the CA token's copy there is only
    read from (a signature writes nothing)."""
    layout = wiring.home(settings)
    folder = (settings.device_storage or layout.root) / "ceiling"
    shutil.rmtree(folder, ignore_errors=True)
    for index, share in enumerate(shares):
        tokendir = folder / str(index) / "tokens"
        softhsm.write_config(folder / str(index) / "softhsm2.conf", tokendir)
        for token in (layout.ca / "tokens").iterdir():
            shutil.copytree(token, folder / str(index) / "tokens" / token.name)
        remaining = share + WARM_UP
        while remaining > 0:
            softhsm.init_tokens(tokendir, min(8, remaining), DEVICE_LABEL, DEVICE_SO_PIN, DEVICE_USER_PIN)
            remaining -= min(8, remaining)
    return folder


def run_ceiling(settings: Settings, key_type: str, count: int, processes: int, keygen_delay: float = 0.0,
                sign_delay: float = 0.0, progress: Callable[[int], None] | None = None,
                device_work: bool = False) -> dict[str, Any]:
    """Run ``count`` iterations split over ``processes`` processes; the ceiling is the sum
    of each process's iterations per second of loop time. ``device_work``: see the module doc."""
    count = max(count, processes)  # every process runs at least one iteration
    shares = [count // processes + (1 if i < count % processes else 0) for i in range(processes)]
    folder = _prepare(settings, shares)
    env = {key: value for key, value in os.environ.items() if not key.startswith("CERTFACTORY_SIMULATED_")}
    children: list[tuple[subprocess.Popen[str], Path, Path]] = []
    for index, share in enumerate(shares):  # each child's stderr goes to its log, closed with the child
        log, counter = folder / f"worker-{index}.log", folder / f"progress-{index}"
        env["SOFTHSM2_CONF"] = str(folder / str(index) / "softhsm2.conf")
        command = [sys.executable, "-m", "certfactory.ceiling", "--home", str(settings.resolved_home),
                   "--key-type", key_type, "--count", str(share), "--keygen-delay",
                   str(keygen_delay), "--sign-delay", str(sign_delay), "--progress", str(counter),
                   *(["--device-work"] if device_work else [])]
        children.append((subprocess.Popen(command, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                          stderr=open(log, "w"), text=True), log, counter))  # noqa: SIM115
    try:
        for child, log, _ in children:
            if child.stdout is None or child.stdout.readline().strip() != "ready":
                child.wait(10)
                raise CertFactoryError(f"a ceiling process did not start: {log.read_text().strip()[-600:]}")
        for child, _, _ in children:
            assert child.stdin is not None
            child.stdin.write("go\n")
            child.stdin.close()
        while any(child.poll() is None for child, _, _ in children):
            if progress:
                progress(sum(int(c.read_text() or 0) for _, _, c in children if c.exists()))
            time.sleep(0.2)
        results = []
        for child, log, _ in children:
            assert child.stdout is not None
            output = child.stdout.read().strip()
            if child.returncode != 0 or not output:
                raise CertFactoryError(f"a ceiling process failed: {log.read_text().strip()[-600:]}")
            results.append(json.loads(output.splitlines()[-1]))
    finally:
        for child, _, _ in children:
            if child.poll() is None:
                child.kill()
                child.wait()
    rates = [r["iterations"] / (r["ended"] - r["started"]) for r in results]
    every = {name: [v for r in results for v in r[name]] for name in ("keygen", "build", "sign")}
    return {
        "processes": processes, "iterations": count, "per_second": round(sum(rates), 3),
        "wall_seconds": round(max(r["ended"] for r in results) - min(r["started"] for r in results), 3),
        "processor_ms_per_iteration": round(1000 * sum(r["cpu"] for r in results) / count, 3),
        "method": "each process, per iteration, on the next fresh blank device token (made before the timing): "
                  "open a session and log in, generate the key pair, close; build the certificate; sign it with the "
                  "CA key on the CA token. No queue, no ledger, " + (
                      "plus the device's own work: SO and user PINs set, proof of possession signed, certificate "
                      "and CA chain written to the device (timed as keygen)" if device_work else
                      "no PIN setting, no writing to the device") +
                  ". Rate = per-process iterations / loop time, summed over the processes",
        "device_work": device_work,
        **{f"{name}_ms": summary(values, 1000, 3) for name, values in every.items()},
        "_samples": every,  # for combine()
    }


def combine(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """One ceiling from runs of it on either side of the pipeline. This host's speed drifts
    over minutes (one RSA-2048 load test's ceiling ran at 12.8/s before its pipeline and
    9.9/s after it), so a ceiling measured only after the pipeline carries the drift into
    the efficiency; runs before and after weigh it on both sides alike. Rate: the
    iteration-weighted mean."""
    iterations = sum(run["iterations"] for run in runs)
    samples = {name: [value for run in runs for value in run["_samples"][name]] for name in runs[-1]["_samples"]}

    def weighted(key: str) -> float:
        return round(sum(run[key] * run["iterations"] for run in runs) / iterations, 3)

    parts = f"; {len(runs)} runs, before and after the pipeline, rate = their iteration-weighted mean"
    return {
        **{key: value for key, value in runs[-1].items() if key != "_samples"},
        "iterations": iterations, "per_second": weighted("per_second"),
        "per_second_by_run": [run["per_second"] for run in runs],
        "wall_seconds": round(sum(run["wall_seconds"] for run in runs), 3),
        "processor_ms_per_iteration": weighted("processor_ms_per_iteration"),
        "method": runs[-1]["method"] + (parts if len(runs) > 1 else ""),
        **{f"{name}_ms": summary(values, 1000, 3) for name, values in samples.items()},
    }


def main(argv: list[str] | None = None) -> None:
    """Entry point of one ceiling process (started by :func:`run_ceiling`)."""
    parser = argparse.ArgumentParser(prog="python -m certfactory.ceiling")
    parser.add_argument("--home", type=Path, required=True)
    parser.add_argument("--key-type", required=True)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--keygen-delay", type=float, default=0.0)
    parser.add_argument("--sign-delay", type=float, default=0.0)
    parser.add_argument("--progress", type=Path, required=True)
    parser.add_argument("--device-work", action="store_true")
    args = parser.parse_args(argv)
    result = worker(args.home, args.key_type, args.count, args.keygen_delay, args.sign_delay,
                    args.progress, args.device_work)
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()

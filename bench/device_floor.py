"""The device's own work, step by step: what no queue or ledger can spare (issue 4).

The load test's ceiling is a device login, key generation and the CA's signature; the
pipeline must also do what DESIGN.md §2 asks of every device: its PINs, a proof of
possession, and the certificate and CA chain written onto it. This runs the station's
real per-device path (``factory.devices.Station``) on N fresh SoftHSM2 devices, one
process, and times each step in processor time (the pipeline is processor-bound) with
the system calls it makes (``/proc/self/io``). Beside it, on other devices of the same
station, the ceiling's own steps: login + key generation, and a signature with an
RSA-2048 key on a CA token. From the two, the best efficiency any pipeline could reach
against the ceiling on this host, with its queues, ledger and files free:

    bound = ceiling steps / (ceiling steps + the device's own work beyond them)

``--device-storage ram`` keeps the tokens in /dev/shm (as the load test does by default),
``disk`` in a temporary folder on this host's disk.

    .venv/bin/python bench/device_floor.py --devices 60 --key-type rsa2048 --device-storage ram \
        --json bench/results/device_floor-rsa2048-ram.json
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from certfactory import host, loadreport
from certfactory.loadstats import summary
from certfactory.settings import SOFTHSM2_MODULE
from factory import softhsm, tokens
from factory.devices import TRANSPORT_SO_PIN, Station

T = TypeVar("T")
CA_USER_PIN = "bench-ca-0000"
CA_SIGNATURE = "ceiling: certificate signed by an RSA-2048 key on a token"
# The chain as the packager writes it: two CA certificates of a realistic size.
CHAIN = [(os.urandom(900), b"0\x00", "issuing-ca"), (os.urandom(850), b"0\x00", "root-ca")]


def _syscalls() -> int:
    with open("/proc/self/io") as io:
        counters = dict(line.split(": ") for line in io.read().splitlines())
    return int(counters["syscr"]) + int(counters["syscw"])


class Steps:
    """Processor milliseconds and read/write system calls, per named step."""

    def __init__(self) -> None:
        self.cpu: dict[str, list[float]] = {}
        self.calls: dict[str, list[int]] = {}

    def time(self, name: str, work: Callable[[], T]) -> T:
        calls, cpu = _syscalls(), time.process_time()
        result = work()
        self.cpu.setdefault(name, []).append((time.process_time() - cpu) * 1000)
        self.calls.setdefault(name, []).append(_syscalls() - calls)
        return result

    def mean(self, name: str) -> float:
        return sum(self.cpu[name]) / len(self.cpu[name])

    def report(self) -> dict[str, Any]:
        return {name: {"processor_ms": summary(values, 1, 3),
                       "read_write_syscalls_mean": round(sum(self.calls[name]) / len(self.calls[name]), 1)}
                for name, values in self.cpu.items()}


def _ca_key(station: Station, known: set[str]) -> Any:
    """An RSA-2048 key on a token of its own, standing for the CA token."""
    before = set(softhsm.token_directories(station.tokendir))
    softhsm.init_tokens(station.tokendir, 1, "bench-ca", TRANSPORT_SO_PIN, CA_USER_PIN)
    serial = next(s for s in softhsm.token_directories(station.tokendir) if s not in before)
    known.add(serial)
    station.refresh()
    session = tokens.find_token(SOFTHSM2_MODULE, serial=serial).open(rw=True, user_pin=CA_USER_PIN)
    public_der = tokens.generate_keypair(session, "rsa2048", b"ca", "bench-ca")
    return tokens.token_private_key(session, tokens.find_private_key(session, key_id=b"ca"), public_der)


def _builder() -> x509.CertificateBuilder:
    """A subscriber-sized certificate to sign (the CA signs through pyca/cryptography)."""
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Nguyễn Văn An"),
                      x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Bộ Tài chính")])
    now = dt.datetime.now(dt.UTC)
    return (x509.CertificateBuilder().subject_name(name).issuer_name(name).serial_number(x509.random_serial_number())
            .public_key(ec.generate_private_key(ec.SECP256R1()).public_key())
            .not_valid_before(now).not_valid_after(now + dt.timedelta(days=1095)))


def run(devices: int, key_type: str, home: Path) -> dict[str, Any]:
    station = Station("bench", home, SOFTHSM2_MODULE, ports=8)
    station.prepare()
    os.environ["SOFTHSM2_CONF"] = str(station.config)  # before the module is first loaded
    known: set[str] = set()
    steps, blanks = Steps(), []
    ca_key, builder = _ca_key(station, known), _builder()
    for _ in range(devices):  # first: re-reading the slots below ends this process's sessions
        steps.time(CA_SIGNATURE, lambda: builder.sign(ca_key, hashes.SHA256()))
    generate_keypair = tokens.generate_keypair  # timed inside the station's path too: see _bound
    tokens.generate_keypair = lambda *args: steps.time(  # type: ignore[assignment]
        "key generation call", lambda: generate_keypair(*args))
    try:
        for index in range(2 * devices):
            if not blanks:
                station.refresh()  # back from the packaged device's view (the pipeline: another process)
                blanks = station.provision_blank(station.ports, known)
                known.update(serial for serial, _ in blanks)
            serial, token_dir = blanks.pop(0)
            key_id = tokens.key_id_for(f"bench-{index}")
            if index % 2:  # the ceiling's steps, on a device of its own
                station.personalise(serial)
                envelope = station.read_envelope(serial)
                assert envelope is not None  # personalised a moment ago
                pin = envelope.user_pin
                token = station._token(serial)
                with tokens.token_lock:
                    steps.time("ceiling: login + keygen",
                               lambda: _login_keygen(token, pin, key_type, key_id, generate_keypair))
                continue
            steps.time("personalise: envelope + SO and user PINs", lambda: station.personalise(serial))
            public_der, _ = steps.time(
                "generate_key: login, keygen, proof of possession",
                lambda: station.generate_key(serial, key_type, key_id, "cf-bench", lambda public: b"statement"))
            steps.time("eject: token off the station", lambda: station.eject(serial, token_dir))
            steps.time("write_certificates: re-read, login, 3 certificate objects",
                       lambda: station.write_certificates(serial, key_id, "cf-bench",
                                                          (os.urandom(1100), b"0\x00", public_der), CHAIN))
            steps.time("manifest + sealed envelope", lambda: (station.write_manifest(serial, {"device": serial}),
                                                              station.seal_envelope(serial, "now")))
    finally:
        tokens.generate_keypair = generate_keypair
    return _bound(steps, devices, key_type)


def _login_keygen(token: Any, pin: str, key_type: str, key_id: bytes, generate: Callable[..., bytes]) -> None:
    with token.open(rw=True, user_pin=pin) as session:
        generate(session, key_type, key_id, "ceiling")


def _bound(steps: Steps, devices: int, key_type: str) -> dict[str, Any]:
    ceiling = steps.mean("ceiling: login + keygen") + steps.mean(CA_SIGNATURE)
    station = [name for name in steps.cpu if not name.startswith(("ceiling", "key generation"))]
    # the station's own key generation call, timed inside its path, is the ceiling's work:
    # what remains is the device's work beyond it (its logins counted as device work)
    beyond = sum(steps.mean(name) for name in station) - steps.mean("key generation call")
    return {
        "devices": devices, "key_type": key_type, "steps": steps.report(),
        "ceiling_processor_ms": round(ceiling, 3),
        "device_work_beyond_ceiling_ms": round(beyond, 3),
        "efficiency_bound": round(ceiling / (ceiling + beyond), 3),
        "method": "processor time per step, one process, each device fresh; beyond = the station path's steps "
                  "less its own key generation call; the bound takes every queue hop, ledger write and file of "
                  "the pipeline as free",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--devices", type=int, default=60)
    parser.add_argument("--key-type", default="ecdsa-p256", choices=sorted(tokens.KEY_SPECS))
    parser.add_argument("--device-storage", choices=("ram", "disk"), default="ram")
    parser.add_argument("--json", type=Path, help="write the result here")
    args = parser.parse_args()
    where = "/dev/shm" if args.device_storage == "ram" else None
    with tempfile.TemporaryDirectory(prefix="certfactory-device-floor-", dir=where) as home:
        started = time.time()
        filesystem = host.filesystem(Path(home))
        result = run(args.devices, args.key_type, Path(home))
    result["device_storage"] = {"where": args.device_storage, "filesystem": filesystem}
    loadreport.write_benchmark("device_floor", result, started, args.json)


if __name__ == "__main__":
    main()

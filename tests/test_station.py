"""A personalisation station on real SoftHSM2 tokens: the shelf of blank devices, the key
and its proof of possession in one session, packaging where the device is handed over.

The station points this process's PKCS#11 module at its own token directory, so the
checks run in a process of their own (spawned) and report back what they saw."""

from __future__ import annotations

import datetime as dt
import multiprocessing
from pathlib import Path
from typing import Any

from certfactory.settings import SOFTHSM2_MODULE


def _exercise_station(home: Path, results: Any) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat, load_der_public_key
    from cryptography.x509.oid import NameOID
    from pkcs11 import Attribute, ObjectClass

    from factory import possession, softhsm, tokens
    from factory.devices import Station

    seen: dict[str, Any] = {}
    storage = home / "device-storage"  # the device tokens apart from the home (the load test puts them in RAM)
    station = Station("bench", home / "home", SOFTHSM2_MODULE, ports=3, storage=storage)
    station.prepare()
    seen["stocked"] = station.stock_blank(5)
    shelf = set(softhsm.token_directories(station.stock).values())
    made_here = softhsm.init_tokens
    softhsm.init_tokens = lambda *args, **kwargs: (_ for _ in ()).throw(AssertionError("made, not taken"))
    first = station.provision_blank(3, set())  # all three from the shelf: nothing made
    softhsm.init_tokens = made_here
    seen["first_from_shelf"] = {name for _, name in first} <= shelf
    seen["left_after_first"] = station.stocked()
    second = station.provision_blank(3, {serial for serial, _ in first})  # two from the shelf, one made
    seen["second"], seen["left_after_second"] = len(second), station.stocked()

    serial, token_dir = first[0]
    station.personalise(serial)
    key_id = tokens.key_id_for("request-1")
    public_der, proof = station.generate_key(serial, "ecdsa-p256", key_id, "cf-request-1",
                                             lambda public: possession.statement("request-1", serial, public))
    seen["proof_verifies"] = possession.verify(public_der, possession.statement("request-1", serial, public_der), proof)
    again, _ = station.generate_key(serial, "ecdsa-p256", key_id, "cf-request-1", lambda public: b"again")
    seen["same_key_again"] = again == public_der

    issuer = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Nguyễn Văn A")])
    now = dt.datetime.now(dt.UTC)
    certificate = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
                   .public_key(load_der_public_key(public_der)).serial_number(1)  # type: ignore[arg-type]
                   .not_valid_before(now).not_valid_after(now + dt.timedelta(days=1)).sign(issuer, hashes.SHA256()))
    der = certificate.public_bytes(Encoding.DER)
    station.eject(serial, token_dir)
    seen["off_station"] = not (station.tokendir / token_dir).exists()
    seen["layout"] = ((storage / "devices" / serial / "tokens" / token_dir).is_dir()
                      and station.envelope_path(serial).parent == home / "home" / "pin-envelopes"
                      and station.envelope_path(serial).exists() and not (home / "home" / "devices").exists())
    for _ in range(2):  # a retry after a crash writes nothing twice
        station.write_certificates(serial, key_id, "cf-request-1",
                                   (der, name.public_bytes(), certificate.public_key().public_bytes(
                                       Encoding.DER, PublicFormat.SubjectPublicKeyInfo)),
                                   [(der, name.public_bytes(), "issuing-ca")])
    envelope = station.read_envelope(serial)
    assert envelope is not None
    token = tokens.find_token(SOFTHSM2_MODULE, serial=serial)  # the module now sees the packaged device alone
    with tokens.user_session(token, envelope.user_pin, rw=False) as session:
        seen["certificates_on_device"] = len(list(session.get_objects({
            Attribute.CLASS: ObjectClass.CERTIFICATE})))
    # back to the station: its other devices are found again
    station.personalise(second[0][0])
    seen["station_again"] = station.present(second[0][0])
    results.put(seen)


def test_the_shelf_the_key_with_its_proof_and_packaging(tmp_path: Path) -> None:
    """Provisioning plugs devices in from the shelf before making any; the key comes with a
    proof that verifies and is the same key when asked again; packaging writes the
    certificates (once, however often it runs) onto the device where it is handed over,
    and the station's own devices are seen again afterwards."""
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    child = context.Process(target=_exercise_station, args=(tmp_path, results))
    child.start()
    child.join(120)
    assert child.exitcode == 0, "the station process failed: see its traceback above"
    seen = results.get(timeout=5)
    assert seen["stocked"] == 5 and seen["first_from_shelf"] and seen["left_after_first"] == 2
    assert seen["second"] == 3 and seen["left_after_second"] == 0
    assert seen["proof_verifies"] and seen["same_key_again"]
    assert seen["off_station"] and seen["certificates_on_device"] == 2
    assert seen["layout"], "packaged devices belong in the device storage, PIN envelopes in the home"
    assert seen["station_again"]


def test_device_floor_benchmark_times_every_step_of_the_device_path(tmp_path: Path) -> None:
    """``bench/device_floor.py`` on a few P-256 devices in RAM: every step of the station's
    path and the ceiling's own steps timed, the device's work beyond the ceiling positive,
    and the bound it leaves below 1."""
    import json
    import subprocess
    import sys

    out = tmp_path / "floor.json"
    bench = Path(__file__).parent.parent / "bench" / "device_floor.py"
    done = subprocess.run([sys.executable, str(bench), "--devices", "3", "--key-type", "ecdsa-p256", "--json",
                           str(out)], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    result = json.loads(out.read_text())
    assert result["benchmark"] == "device_floor" and result["device_storage"]["filesystem"] == "tmpfs"
    assert len(result["steps"]) == 8, list(result["steps"])
    assert all(step["processor_ms"]["count"] == 3 for step in result["steps"].values())
    certificates = result["steps"]["write_certificates: re-read, login, 3 certificate objects"]
    assert certificates["read_write_syscalls_mean"] > 30  # three objects, each file rewritten per attribute
    assert result["device_work_beyond_ceiling_ms"] > 0 and 0 < result["efficiency_bound"] < 1

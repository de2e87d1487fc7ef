"""Endorsement: only a batch its agency's registered head signed (or a recorded paper letter) gets in."""

from __future__ import annotations

import datetime as dt
import shutil
import subprocess
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from factory import endorsement as e
from factory.agencies import Agency, get_agency, import_agencies
from factory.ledger import Ledger
from tests.test_agencies import NOW, Head, agency_row, make_head, write_agencies

DATA = Path(__file__).parent / "data"


@pytest.fixture()
def ledger(tmp_path: Path) -> Ledger:
    """A fresh SQLite ledger."""
    return Ledger.connect(f"sqlite:///{tmp_path / 'ledger.db'}")


@pytest.fixture()
def head(tmp_path: Path) -> Head:
    """The head registered for agency BTC (RSA-2048, valid 30 days before NOW to 3 years on)."""
    return make_head(tmp_path, "Nguyễn Văn Thủ")


@pytest.fixture()
def batch(tmp_path: Path, ledger: Ledger, head: Head) -> Path:
    """A batch file (CRLF lines, Vietnamese text) of agency BTC, whose head is ``head``."""
    import_agencies(ledger, write_agencies(tmp_path / "agencies.csv", [agency_row("BTC", head)]), now=NOW)
    path = tmp_path / "batch.csv"
    shutil.copy(DATA / "intake-good-bom.csv", path)
    return path


def signed(batch: Path, signer: Head, *, pem: bool = False) -> Path:
    """Sign ``batch`` as ``signer``; the .p7s path."""
    path = batch.with_name(batch.name + ".p7s")
    path.write_bytes(e.sign_detached(batch.read_bytes(), signer.certificate, signer.key, pem_output=pem))
    return path


def refusal(ledger: Ledger, batch: Path, at: dt.datetime = NOW, **endorsement: object) -> e.EndorsementRefused:
    """The refusal ``endorse`` raises."""
    with pytest.raises(e.EndorsementRefused) as refused:
        e.endorse(ledger, "BTC", batch, at=at, **endorsement)  # type: ignore[arg-type]
    return refused.value


@pytest.mark.parametrize("pem", [False, True], ids=["der", "pem"])
def test_a_batch_signed_by_the_registered_head_is_accepted(ledger: Ledger, head: Head, batch: Path,
                                                           pem: bool) -> None:
    """The audit record names the head, the certificate and the SHA-256 of the exact file bytes."""
    import hashlib

    record = e.endorse(ledger, "BTC", batch, signature=signed(batch, head, pem=pem), at=NOW)
    assert record["kind"] == "signature" and record["agency_code"] == "BTC"
    assert record["head_name"] == "Nguyễn Văn Thủ" and "CN=Nguyễn Văn Thủ" in record["signer"]
    assert record["file_sha256"] == hashlib.sha256(batch.read_bytes()).hexdigest()


def test_an_ecdsa_head_signature_is_accepted(tmp_path: Path, ledger: Ledger, batch: Path) -> None:
    """A head with a P-256 key signs with ECDSA."""
    ecdsa = make_head(tmp_path, "Lê Thị Trưởng", ecdsa=True)
    import_agencies(ledger, write_agencies(tmp_path / "agencies.csv", [agency_row("BTC", ecdsa)]), now=NOW)
    assert e.endorse(ledger, "BTC", batch, signature=signed(batch, ecdsa), at=NOW)["kind"] == "signature"


@pytest.mark.parametrize("options", [[], ["-keyopt", "rsa_padding_mode:pss"], ["-noattr"], ["-keyid", "-nocerts"]],
                         ids=["pkcs1", "pss", "no-signed-attributes", "key-id-no-certificates"])
def test_a_signature_made_with_openssl_cms_is_accepted(tmp_path: Path, ledger: Ledger, head: Head, batch: Path,
                                                       options: list[str]) -> None:
    """Agencies sign with their own tools: `openssl cms -sign -binary` in its variants verifies."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.fail("openssl not found: install Debian's openssl package (`make test` does, as root)")
    key = tmp_path / "head.key"
    key.write_bytes(head.key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    signature = tmp_path / "openssl.p7s"
    subprocess.run([openssl, "cms", "-sign", "-binary", "-md", "sha256", "-in", str(batch), "-signer",
                    str(head.pem), "-inkey", str(key), "-outform", "DER", "-out", str(signature), *options],
                   check=True, capture_output=True)
    assert e.endorse(ledger, "BTC", batch, signature=signature, at=NOW)["kind"] == "signature"


def test_a_batch_signed_by_another_key_is_refused(tmp_path: Path, ledger: Ledger, batch: Path) -> None:
    """Someone else's valid certificate and key: refused whole, naming the signer and the registered head."""
    refused = refusal(ledger, batch, signature=signed(batch, make_head(tmp_path, "Kẻ Mạo Danh")))
    assert refused.reason == e.WRONG_SIGNER == "signed by a key other than the registered head's"
    assert "Kẻ Mạo Danh" in refused.detail and "Nguyễn Văn Thủ" in refused.detail


def test_another_key_passing_off_the_heads_certificate_is_refused(tmp_path: Path, ledger: Ledger, head: Head,
                                                                   batch: Path) -> None:
    """The head's certificate attached to a signature made with another key is still another key."""
    other = make_head(tmp_path, "Kẻ Mạo Danh")
    impostor = Head(other.key, head.certificate, head.pem)
    assert refusal(ledger, batch, signature=signed(batch, impostor)).reason == e.WRONG_SIGNER


def test_a_modified_file_is_refused(ledger: Ledger, head: Head, batch: Path) -> None:
    """One byte changed after signing (a row number edited) no longer matches the signature."""
    signature = signed(batch, head)
    batch.write_bytes(batch.read_bytes().replace(b"HS-000002", b"HS-000009"))
    refused = refusal(ledger, batch, signature=signature)
    assert refused.reason == e.MISMATCH == "signature does not match the file"


def test_an_expired_head_certificate_is_refused(ledger: Ledger, head: Head, batch: Path) -> None:
    """At submission after the head certificate's notAfter, its signature no longer endorses."""
    after = head.certificate.not_valid_after_utc + dt.timedelta(minutes=1)
    refused = refusal(ledger, batch, at=after, signature=signed(batch, head))
    assert refused.reason == e.HEAD_EXPIRED == "head certificate expired"


def test_the_former_heads_signature_is_refused_once_a_new_head_is_registered(tmp_path: Path, ledger: Ledger,
                                                                              head: Head, batch: Path) -> None:
    """Re-importing the registry with a new head retires the old head's key at once."""
    new = make_head(tmp_path, "Trần Thị Mới")
    import_agencies(ledger, write_agencies(tmp_path / "agencies.csv", [agency_row("BTC", new)]), now=NOW)
    assert refusal(ledger, batch, signature=signed(batch, head)).reason == e.WRONG_SIGNER


def test_an_unregistered_agency_is_refused(ledger: Ledger, head: Head, batch: Path) -> None:
    """No registry entry, no endorsement: the message says how to register."""
    with pytest.raises(e.EndorsementRefused) as refused:
        e.endorse(ledger, "UNKNOWN", batch, signature=signed(batch, head), at=NOW)
    assert refused.value.reason == e.NOT_REGISTERED == "agency not registered"
    assert "agencies import" in refused.value.diagnostics()


def test_a_paper_endorsement_is_recorded_with_its_letter_and_operator(ledger: Ledger, batch: Path) -> None:
    """A letter number may hold slashes; the date is the part after the last one."""
    record = e.endorse(ledger, "BTC", batch, letter="123/BTC-KHTC/2026-02-27", operator=" Lê  Văn Vận ", at=NOW)
    assert record == {"kind": "paper", "agency_code": "BTC", "head_name": "Nguyễn Văn Thủ",
                      "letter_number": "123/BTC-KHTC", "letter_date": "2026-02-27", "operator": "Lê Văn Vận",
                      "recorded_at": NOW.isoformat()}


@pytest.mark.parametrize(("letter", "operator"), [
    ("123/BTC-KHTC", "Lê Văn Vận"), ("123/27/02/2026", "Lê Văn Vận"), ("/2026-02-27", "Lê Văn Vận"),
    ("123/2026-03-05", "Lê Văn Vận"), ("123/2026-02-27", "  "), ("123/2026-02-27", "Lê\x00Văn"),
])
def test_an_incomplete_paper_endorsement_is_refused(ledger: Ledger, batch: Path, letter: str, operator: str) -> None:
    """No date, a non-ISO date, no number, a future date, no operator or a control character: refused."""
    assert refusal(ledger, batch, letter=letter, operator=operator).reason == e.BAD_LETTER


def test_a_batch_without_any_endorsement_is_refused(ledger: Ledger, batch: Path) -> None:
    """Neither a signature nor a letter with its operator: refused, saying what to give."""
    refused = refusal(ledger, batch)
    assert refused.reason == e.NOT_ENDORSED and "--signature" in refused.detail
    half = refusal(ledger, batch, letter="123/2026-02-27")
    assert half.reason == e.BAD_LETTER and "--operator" in half.detail


def test_a_missing_signature_file_is_refused(tmp_path: Path, ledger: Ledger, batch: Path) -> None:
    """A signature path that cannot be read is a refusal, not an OSError."""
    assert refusal(ledger, batch, signature=tmp_path / "none.p7s").reason == e.UNREADABLE


@pytest.fixture(scope="module")
def fuzz_target(tmp_path_factory: pytest.TempPathFactory) -> tuple[Agency, Path, bytes]:
    """A registered agency, a batch and its head's good signature, shared by the fuzz examples."""
    folder = tmp_path_factory.mktemp("endorsement-fuzz")
    fuzz_head = make_head(folder, "Nguyễn Văn Thủ")
    ledger = Ledger.connect(f"sqlite:///{folder / 'ledger.db'}")
    import_agencies(ledger, write_agencies(folder / "agencies.csv", [agency_row("BTC", fuzz_head)]), now=NOW)
    agency = get_agency(ledger, "BTC")
    ledger.close()
    assert agency is not None
    batch = folder / "batch.csv"
    shutil.copy(DATA / "intake-good.csv", batch)
    return agency, batch, e.sign_detached(batch.read_bytes(), fuzz_head.certificate, fuzz_head.key)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.binary(max_size=600), cut=st.integers(0, 3000), flip=st.integers(0, 3000))
def test_any_signature_bytes_are_verified_or_refused_never_a_traceback(
        fuzz_target: tuple[Agency, Path, bytes], data: bytes, cut: int, flip: int) -> None:
    """Random bytes, and a real signature truncated or with one byte flipped, only ever raise EndorsementRefused."""
    agency, batch, signature = fuzz_target
    flipped = bytearray(signature)
    flipped[flip % len(flipped)] ^= 0x41
    for candidate in (data, signature[:cut], bytes(flipped)):
        try:
            e.verify_signature(batch, candidate, agency, NOW)
        except e.EndorsementRefused:
            pass


def test_a_file_changed_after_its_signature_was_checked_is_refused(ledger: Ledger, head: Head, batch: Path) -> None:
    """The rows must be the bytes the head signed: a change between the two reads refuses the batch."""
    record = e.endorse(ledger, "BTC", batch, signature=signed(batch, head), at=NOW)
    e.check_unchanged(batch, record)
    batch.write_bytes(batch.read_bytes() + b"\n")
    with pytest.raises(e.EndorsementRefused) as refused:
        e.check_unchanged(batch, record)
    assert refused.value.reason == e.MISMATCH
    e.check_unchanged(batch, {"kind": "paper"})  # a letter names no bytes

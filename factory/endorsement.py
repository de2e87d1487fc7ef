"""A batch's endorsement by its agency's registered head (DESIGN.md §4, issue 3 item 3).

Either (a) a detached CMS/PKCS#7 signature (DER or PEM ``.p7s``) over the exact bytes
of the batch file, made with the key of the head registered for the agency and checked
against the head certificate registered in ``factory.agencies``, valid at submission;
or (b) a paper letter ``NUMBER/DATE`` entered by a named operator. Either way the
result is an audit record (a JSON-ready dict) for the batch. pyca/cryptography 50 can
sign CMS but not verify it, so SignedData is parsed with asn1crypto and the signature
checked with cryptography (RFC 5652 §5.4: signed attributes as a DER SET OF).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from asn1crypto import cms, pem
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed
from cryptography.hazmat.primitives.serialization import Encoding, pkcs7
from sqlalchemy import Engine

from factory.agencies import Agency, fingerprint, get_agency
from factory import errors
from factory.ledger import Ledger, utcnow

# The reasons a batch is refused whole, with their Vietnamese wording.
NOT_REGISTERED = "agency not registered"
WRONG_SIGNER = "signed by a key other than the registered head's"
HEAD_EXPIRED = "head certificate expired"
HEAD_NOT_YET_VALID = "head certificate not yet valid"
MISMATCH = "signature does not match the file"
UNREADABLE = "not a CMS/PKCS#7 signature"
ALGORITHM = "signature algorithm not accepted"
NOT_ENDORSED = "batch not endorsed"
BAD_LETTER = "paper endorsement incomplete"
VIETNAMESE = {
    NOT_REGISTERED: "Cơ quan chưa đăng ký", WRONG_SIGNER: "Chữ ký không phải của thủ trưởng đã đăng ký",
    HEAD_EXPIRED: "Chứng thư số của thủ trưởng đã hết hạn", HEAD_NOT_YET_VALID: "Chứng thư số chưa có hiệu lực",
    MISMATCH: "Chữ ký không khớp với tệp", UNREADABLE: "Tệp chữ ký không hợp lệ",
    ALGORITHM: "Thuật toán ký không được chấp nhận", NOT_ENDORSED: "Lô chưa được thủ trưởng xác nhận",
    BAD_LETTER: "Thông tin công văn xác nhận chưa đủ",
}
_HASHES: dict[str, type[hashes.HashAlgorithm]] = {"sha256": hashes.SHA256, "sha384": hashes.SHA384,
                                                  "sha512": hashes.SHA512}


class EndorsementRefused(errors.EndorsementRefused):
    """``factory.errors.EndorsementRefused`` with the reason's Vietnamese wording filled in."""

    def __init__(self, reason: str, agency_code: str | None, detail: str = "") -> None:
        super().__init__(reason, agency_code, detail, VIETNAMESE.get(reason, reason))


@dataclass(frozen=True)
class _Signer:
    """What verification needs from one SignerInfo, read out of the hostile structure."""

    names_head: bool  # its sid is the head certificate's issuer+serial or key identifier
    embedded: bytes | None  # DER of the certificate the SignedData carries for this sid
    digest: str
    algorithm: str
    pss: tuple[str, str, int] | None  # (hash, MGF1 hash, salt length)
    signed_attrs: bytes | None  # re-tagged as SET OF, the bytes actually signed
    message_digest: bytes | None
    content_type: str | None
    signing_time: dt.datetime | None
    signature: bytes
    content: bytes | None  # encapsulated content, when the signature is not detached


def _signer(data: bytes, head: x509.Certificate) -> tuple[_Signer, str]:
    """The SignerInfo naming the head (else the first) and the subject of its certificate."""
    if pem.detect(data):
        _, _, data = pem.unarmor(data)
    info = cms.ContentInfo.load(data, strict=True)
    if info["content_type"].native != "signed_data":
        raise ValueError("not SignedData")
    signed = info["content"]
    ours = asn1_x509.Certificate.load(head.public_bytes(Encoding.DER))
    carried = [c.chosen for c in signed["certificates"] if c.name == "certificate"] if signed["certificates"] else []
    chosen: tuple[_Signer, str] | None = None
    for signer_info in signed["signer_infos"]:
        sid = signer_info["sid"]
        if sid.name == "issuer_and_serial_number":
            def matches(cert: Any) -> bool:
                wanted = sid.chosen
                return bool(cert.issuer == wanted["issuer"] and cert.serial_number == wanted["serial_number"].native)
        else:
            def matches(cert: Any) -> bool:
                return bool(cert.key_identifier == sid.chosen.native)
        embedded = next((c for c in carried if matches(c)), None)
        attrs = signer_info["signed_attrs"]
        values = {a["type"].native: a["values"][0].native for a in attrs} if attrs else {}
        algorithm = signer_info["signature_algorithm"]
        pss = None
        if algorithm.signature_algo == "rsassa_pss":
            params = algorithm["parameters"]
            pss = (params["hash_algorithm"]["algorithm"].native,
                   params["mask_gen_algorithm"]["parameters"]["algorithm"].native, params["salt_length"].native)
        content = signed["encap_content_info"]["content"]
        candidate = _Signer(
            names_head=matches(ours), embedded=embedded.dump() if embedded is not None else None,
            digest=signer_info["digest_algorithm"]["algorithm"].native, algorithm=algorithm.signature_algo, pss=pss,
            signed_attrs=b"\x31" + attrs.dump()[1:] if attrs else None, message_digest=values.get("message_digest"),
            content_type=values.get("content_type"), signing_time=values.get("signing_time"),
            signature=signer_info["signature"].native, content=content.native if content else None)
        subject = embedded.subject.human_friendly if embedded is not None else "an unknown certificate"
        if candidate.names_head:
            return candidate, subject
        chosen = chosen or (candidate, subject)
    if chosen is None:
        raise ValueError("no SignerInfo")
    return chosen


def _file_digests(path: Path, names: set[str]) -> dict[str, bytes]:
    hashers = {name: hashlib.new(name) for name in names}
    with path.open("rb") as handle:
        while block := handle.read(1 << 20):
            for hasher in hashers.values():
                hasher.update(block)
    return {name: hasher.digest() for name, hasher in hashers.items()}


def verify_signature(batch: Path, signature: bytes, agency: Agency | None, at: dt.datetime) -> dict[str, Any]:
    """Check a detached CMS signature over ``batch`` against the agency's registered head
    at time ``at``; the audit record on success, ``EndorsementRefused`` otherwise."""
    if agency is None:
        raise EndorsementRefused(NOT_REGISTERED, None)
    code, head = agency.agency_code, agency.certificate()
    try:  # asn1crypto parses lazily and raises many kinds of error on malformed input
        signer, subject = _signer(signature, head)
    except Exception as error:  # the signature file is at fault; no retry can help
        raise EndorsementRefused(UNREADABLE, code, type(error).__name__) from None
    if not signer.names_head or (signer.embedded is not None and signer.embedded != head.public_bytes(Encoding.DER)):
        raise EndorsementRefused(WRONG_SIGNER, code, f"signer: {subject}; registered head: {agency.head_name}")
    if at > head.not_valid_after_utc:
        raise EndorsementRefused(HEAD_EXPIRED, code, f"on {head.not_valid_after_utc:%Y-%m-%d %H:%M} UTC")
    if at < head.not_valid_before_utc:
        raise EndorsementRefused(HEAD_NOT_YET_VALID, code, f"until {head.not_valid_before_utc:%Y-%m-%d} UTC")
    if signer.digest not in _HASHES or (signer.pss and signer.pss[0] not in _HASHES):
        raise EndorsementRefused(ALGORITHM, code, f"digest {signer.digest}; use SHA-256")
    digests = _file_digests(batch, {"sha256", signer.digest})
    file_digest = digests[signer.digest]
    if signer.content is not None and hashlib.new(signer.digest, signer.content).digest() != file_digest:
        raise EndorsementRefused(MISMATCH, code, "the signature carries other content")
    if signer.signed_attrs is not None and (signer.message_digest != file_digest or signer.content_type != "data"):
        raise EndorsementRefused(MISMATCH, code, "messageDigest differs from the file's digest")
    chosen = _HASHES[signer.digest]()
    key = head.public_key()
    try:
        signed, prehashed = (signer.signed_attrs, chosen) if signer.signed_attrs else (file_digest, Prehashed(chosen))
        if isinstance(key, rsa.RSAPublicKey) and signer.algorithm == "rsassa_pkcs1v15":
            key.verify(signer.signature, signed, padding.PKCS1v15(), prehashed)
        elif isinstance(key, rsa.RSAPublicKey) and signer.pss and signer.pss[1] in _HASHES:
            pss = padding.PSS(padding.MGF1(_HASHES[signer.pss[1]]()), signer.pss[2])
            key.verify(signer.signature, signed, pss, prehashed)
        elif isinstance(key, ec.EllipticCurvePublicKey) and signer.algorithm == "ecdsa":
            key.verify(signer.signature, signed, ec.ECDSA(prehashed))
        else:
            raise EndorsementRefused(ALGORITHM, code, f"{signer.algorithm} with a {type(key).__name__}")
    except InvalidSignature:
        if signer.signed_attrs is not None:  # the file matches messageDigest: another key signed
            raise EndorsementRefused(WRONG_SIGNER, code, "the signature was not made with the head's key") from None
        raise EndorsementRefused(MISMATCH, code, "the signature value is wrong for this file") from None
    signing_time = signer.signing_time.isoformat() if isinstance(signer.signing_time, dt.datetime) else None
    return {"kind": "signature", "agency_code": code, "head_name": agency.head_name,
            "signer": head.subject.rfc4514_string(), "head_certificate_sha256": fingerprint(head),
            "file_sha256": digests["sha256"].hex(), "digest_algorithm": signer.digest, "signing_time": signing_time,
            "verified_at": at.isoformat()}


def paper_endorsement(agency: Agency | None, letter: str, operator: str, at: dt.datetime) -> dict[str, Any]:
    """Record a paper endorsement: ``letter`` is ``NUMBER/DATE`` (the number may hold
    slashes, e.g. ``123/BTC-KHTC/2026-03-02``; the date is ISO and not in the future),
    ``operator`` the person at the CA who checked the letter."""
    if agency is None:
        raise EndorsementRefused(NOT_REGISTERED, None)
    number, _, date_text = letter.strip().rpartition("/")
    try:
        date = dt.date.fromisoformat(date_text.strip())
    except ValueError:
        raise EndorsementRefused(BAD_LETTER, agency.agency_code, "give the letter as NUMBER/YYYY-MM-DD") from None
    operator = " ".join(unicodedata.normalize("NFC", operator).split())
    if not number.strip() or len(number) > 64 or date > at.date():
        raise EndorsementRefused(BAD_LETTER, agency.agency_code, "a letter number and a date not in the future")
    if not operator or len(operator) > 128 or any(unicodedata.category(c).startswith("C") for c in operator):
        raise EndorsementRefused(BAD_LETTER, agency.agency_code, "name the operator who checked the letter")
    return {"kind": "paper", "agency_code": agency.agency_code, "head_name": agency.head_name,
            "letter_number": number.strip(), "letter_date": date.isoformat(), "operator": operator,
            "recorded_at": at.isoformat()}


def endorse(target: Engine | Ledger, agency_code: str, batch: Path, *, signature: Path | bytes | None = None,
            letter: str | None = None, operator: str | None = None, at: dt.datetime | None = None) -> dict[str, Any]:
    """The batch's endorsement audit record: the signature (a .p7s path or its bytes) if one
    is given, else the paper letter; ``EndorsementRefused`` when neither holds."""
    at = at or utcnow()
    agency = get_agency(target, agency_code)
    if agency is None:
        raise EndorsementRefused(NOT_REGISTERED, agency_code, f"register {agency_code} with `agencies import`")
    if isinstance(signature, bytes):
        return verify_signature(batch, signature, agency, at)
    if signature is not None:
        try:
            data = signature.read_bytes()
        except OSError as error:
            raise EndorsementRefused(UNREADABLE, agency_code, f"{signature.name}: {error.strerror}") from None
        return verify_signature(batch, data, agency, at)
    if letter is not None and operator is not None:
        return paper_endorsement(agency, letter, operator, at)
    if letter is not None or operator is not None:
        raise EndorsementRefused(BAD_LETTER, agency_code, "give both --endorsement-letter NUMBER/DATE and --operator")
    raise EndorsementRefused(NOT_ENDORSED, agency_code,
                             "give --signature FILE.p7s, or --endorsement-letter NUMBER/DATE with --operator NAME")


def check_unchanged(batch: Path, endorsement: dict[str, Any]) -> None:
    """Refuse when the file changed after its signature was checked (it is read twice:
    once to verify, once for its rows); a paper endorsement names no bytes."""
    expected = endorsement.get("file_sha256")
    if expected and _file_digests(batch, {"sha256"})["sha256"].hex() != expected:
        raise EndorsementRefused(MISMATCH, endorsement.get("agency_code"), "the file changed while it was read")


def sign_detached(data: bytes, certificate: x509.Certificate, private_key: pkcs7.PKCS7PrivateKeyTypes,
                  *, pem_output: bool = False) -> bytes:
    """A detached CMS signature over ``data`` exactly (binary: no MIME line-ending
    translation), SHA-256, signer certificate included; for the demo and tests."""
    builder = pkcs7.PKCS7SignatureBuilder().set_data(data).add_signer(certificate, private_key, hashes.SHA256())
    options = [pkcs7.PKCS7Options.DetachedSignature, pkcs7.PKCS7Options.Binary]
    return builder.sign(Encoding.PEM if pem_output else Encoding.DER, options)

"""The issuing CA: its hierarchy on the CA token, the subscriber profile, signing.

Profile (DESIGN.md §5): X.509 v3, 128-bit random serial, subject from typed fields
(C, ST, O, OU…, title, CN, UID=CCCD:…), e-mail in subjectAltName, keyUsage
digitalSignature + nonRepudiation (critical), EKU document signing + e-mail
protection, basicConstraints CA:FALSE, SKI/AKI, CRL distribution point, AIA and a
policy OID. The private keys stay on the CA token; ``builder.sign`` reaches them
through ``factory.tokens``' key classes.
"""

from __future__ import annotations

import datetime as dt
import secrets
import threading
from dataclasses import dataclass
from pathlib import Path

import pkcs11
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes, PublicKeyTypes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from factory import tokens
from factory.errors import PermanentError, PolicyError
from schemas.request import RequestRecord

ROOT_LABEL = "root-ca"
ISSUING_LABEL = "issuing-ca"
DOCUMENT_SIGNING = x509.ObjectIdentifier("1.3.6.1.5.5.7.3.36")  # RFC 9336
CA_KEY_TYPE = "rsa3072"
BACKDATE = dt.timedelta(minutes=5)  # clock skew between the CA and relying parties


@dataclass(frozen=True)
class Policy:
    """What the certificate policy fixes: validity, the policy OID, where the repository is."""

    organization: str
    certificate_days: int
    policy_oid: str
    repository_url: str
    allowed_key_types: tuple[str, ...]

    @property
    def crl_url(self) -> str:
        """The issuing CA's CRL (distribution point)."""
        return f"{self.repository_url.rstrip('/')}/crl/issuing.crl"

    @property
    def issuer_url(self) -> str:
        """The issuing CA's certificate (AIA caIssuers)."""
        return f"{self.repository_url.rstrip('/')}/ca/issuing.cer"


def new_serial() -> int:
    """128 random bits, positive and never zero (RFC 5280 §4.1.2.2)."""
    return secrets.randbits(128) | 1


def _key_checks(public_key: PublicKeyTypes, key_type: str, policy: Policy) -> None:
    if key_type not in policy.allowed_key_types:
        raise PolicyError(f"key type {key_type} is not allowed by the policy")
    expected = tokens.KEY_SPECS[key_type][1]
    if isinstance(public_key, rsa.RSAPublicKey):
        if public_key.key_size != expected:
            raise PolicyError(f"public key is RSA-{public_key.key_size}, the request asked for {key_type}")
    elif isinstance(public_key, ec.EllipticCurvePublicKey):
        if public_key.curve.name != expected:
            raise PolicyError(f"public key is on {public_key.curve.name}, the request asked for {key_type}")
    else:
        raise PolicyError(f"public key type {type(public_key).__name__} is not allowed")


def subject_name(record: RequestRecord) -> x509.Name:
    """The subscriber's subject, from typed fields only, outermost first."""
    attributes = [
        x509.NameAttribute(NameOID.COUNTRY_NAME, "VN"),
        x509.NameAttribute(NameOID.STATE_OR_PROVINCE_NAME, record.province),
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, record.organization),
        *(x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, unit) for unit in record.organizational_units),
        x509.NameAttribute(NameOID.TITLE, record.position),
        x509.NameAttribute(NameOID.COMMON_NAME, record.full_name),
        x509.NameAttribute(NameOID.USER_ID, f"CCCD:{record.citizen_id}"),
    ]
    try:
        return x509.Name(attributes)
    except ValueError as error:
        raise PolicyError(f"subject cannot be encoded: {error}") from error


def subscriber_builder(record: RequestRecord, public_der: bytes, serial: int, issuer: x509.Certificate,
                       now: dt.datetime, policy: Policy) -> x509.CertificateBuilder:
    """The to-be-signed subscriber certificate; refuses a key the policy does not allow."""
    public_key = serialization.load_der_public_key(public_der)
    _key_checks(public_key, record.key_type.value, policy)
    not_before = now - BACKDATE
    issuer_ski = issuer.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    return (
        x509.CertificateBuilder()
        .serial_number(serial)
        .issuer_name(issuer.subject)
        .subject_name(subject_name(record))
        .public_key(public_key)  # type: ignore[arg-type]
        .not_valid_before(not_before)
        .not_valid_after(not_before + dt.timedelta(days=policy.certificate_days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(
            digital_signature=True, content_commitment=True, key_encipherment=False, data_encipherment=False,
            key_agreement=False, key_cert_sign=False, crl_sign=False, encipher_only=False, decipher_only=False),
            critical=True)
        .add_extension(x509.ExtendedKeyUsage([DOCUMENT_SIGNING, ExtendedKeyUsageOID.EMAIL_PROTECTION]),
                       critical=False)
        .add_extension(x509.SubjectAlternativeName([x509.RFC822Name(record.email)]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)  # type: ignore[arg-type]
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(issuer_ski), critical=False)
        .add_extension(x509.CRLDistributionPoints([x509.DistributionPoint(
            full_name=[x509.UniformResourceIdentifier(policy.crl_url)], relative_name=None, reasons=None,
            crl_issuer=None)]), critical=False)
        .add_extension(x509.AuthorityInformationAccess([x509.AccessDescription(
            x509.oid.AuthorityInformationAccessOID.CA_ISSUERS, x509.UniformResourceIdentifier(policy.issuer_url))]),
            critical=False)
        .add_extension(x509.CertificatePolicies([x509.PolicyInformation(
            x509.ObjectIdentifier(policy.policy_oid), None)]), critical=False)
    )


def sign(builder: x509.CertificateBuilder, key: PrivateKeyTypes) -> x509.Certificate:
    """Sign with SHA-256 (the key may live on a token)."""
    return builder.sign(key, hashes.SHA256())  # type: ignore[arg-type]


def ca_builder(subject: x509.Name, issuer: x509.Name, public_key: PublicKeyTypes, issuer_public: PublicKeyTypes,
               now: dt.datetime, years: int, path_length: int | None) -> x509.CertificateBuilder:
    """A CA certificate: basicConstraints CA:TRUE, keyCertSign + cRLSign."""
    not_before = now - BACKDATE
    return (
        x509.CertificateBuilder()
        .serial_number(new_serial())
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)  # type: ignore[arg-type]
        .not_valid_before(not_before)
        .not_valid_after(not_before + dt.timedelta(days=365 * years))
        .add_extension(x509.BasicConstraints(ca=True, path_length=path_length), critical=True)
        .add_extension(x509.KeyUsage(
            digital_signature=False, content_commitment=False, key_encipherment=False, data_encipherment=False,
            key_agreement=False, key_cert_sign=True, crl_sign=True, encipher_only=False, decipher_only=False),
            critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)  # type: ignore[arg-type]
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_public), critical=False)  # type: ignore[arg-type]
    )


def ca_name(organization: str, common_name: str) -> x509.Name:
    """A CA's distinguished name (our own names, never the government CA's)."""
    return x509.Name([
        x509.NameAttribute(NameOID.COUNTRY_NAME, "VN"),
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization),
        x509.NameAttribute(NameOID.COMMON_NAME, common_name),
    ])


class CAToken:
    """The CA token, opened once per process and kept logged in (login is per process).

    Holds the root and issuing keys; ``issuing_key()`` is usable wherever pyca/cryptography
    wants a private key. Use from one thread at a time (``tokens.token_lock``)."""

    def __init__(self, module: str, label: str, pin_file: Path) -> None:
        self.module = module
        self.label = label
        self.pin_file = pin_file
        self._session: pkcs11.Session | None = None
        self._keys: dict[str, PrivateKeyTypes] = {}
        self._lock = threading.Lock()

    def _open(self) -> pkcs11.Session:
        if self._session is None:
            if not self.pin_file.exists():
                raise PermanentError(f"CA PIN file {self.pin_file} is missing: run `certfactory init`")
            token = tokens.find_token(self.module, label=self.label)
            try:
                with tokens.token_lock:
                    self._session = token.open(rw=True, user_pin=self.pin_file.read_text().strip())
            except pkcs11.exceptions.PKCS11Error as error:
                tokens.raise_token_error(error, f"opening CA token {self.label}")
        return self._session

    def key(self, label: str) -> PrivateKeyTypes:
        """A CA private key by label, wrapped for pyca/cryptography."""
        with self._lock:
            if label not in self._keys:
                session = self._open()
                with tokens.token_lock:
                    private = tokens.find_private_key(session, label=label)
                    if private is None:
                        raise PermanentError(f"CA key {label} is not on token {self.label}: run `certfactory init`")
                    self._keys[label] = tokens.token_private_key(session, private,
                                                                 tokens.public_key_der(session, private))
            return self._keys[label]

    def generate(self, label: str) -> PrivateKeyTypes:
        """Generate a CA key pair on the token (once; an existing key is returned)."""
        session = self._open()
        with tokens.token_lock:
            if tokens.find_private_key(session, label=label) is None:
                tokens.generate_keypair(session, CA_KEY_TYPE, label.encode(), label)
        return self.key(label)

    def close(self) -> None:
        """Log out and close the session."""
        with self._lock:
            if self._session is not None:
                self._session.close()
                self._session = None
                self._keys.clear()

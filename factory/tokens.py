"""PKCS#11 tokens through python-pkcs11: the library, sessions, keys on the token.

Hardware sits behind this narrow edge. Two facts shape it (PARTS.md): python-pkcs11
initialises the module with locking off, so each process loads it once under a lock
and uses it from one thread at a time; and a token's private key is used through
pyca/cryptography's key interface, so ``factory.ca`` signs with ``builder.sign(key, …)``
without knowing an HSM is behind it.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, NoReturn

import pkcs11
import pkcs11.exceptions as p11
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa, utils
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes, PublicKeyTypes
from pkcs11 import Attribute, KeyType, Mechanism, ObjectClass
from pkcs11.util.ec import encode_ec_public_key, encode_named_curve_parameters

from factory.errors import PermanentError, TokenError

_libraries: dict[str, pkcs11.lib] = {}
_load_lock = threading.Lock()
# python-pkcs11 turns the module's own locking off: one token call at a time per process.
token_lock = threading.RLock()

# Private keys: signing only, generated on the token, never readable or exportable.
PRIVATE_KEY_TEMPLATE = {
    Attribute.TOKEN: True,
    Attribute.PRIVATE: True,
    Attribute.SENSITIVE: True,
    Attribute.EXTRACTABLE: False,
    Attribute.SIGN: True,
    Attribute.DECRYPT: False,
    Attribute.UNWRAP: False,
    Attribute.DERIVE: False,
}
PUBLIC_KEY_TEMPLATE = {
    Attribute.TOKEN: True,
    Attribute.VERIFY: True,
    Attribute.ENCRYPT: False,
    Attribute.WRAP: False,
}

KEY_SPECS: dict[str, tuple[KeyType, int | str]] = {
    "rsa2048": (KeyType.RSA, 2048),
    "rsa3072": (KeyType.RSA, 3072),
    "ecdsa-p256": (KeyType.EC, "secp256r1"),
}

_TRANSIENT = (
    p11.TokenNotPresent, p11.TokenNotRecognised, p11.DeviceRemoved, p11.DeviceError, p11.DeviceMemory,
    p11.SessionHandleInvalid, p11.SessionClosed, p11.SessionCount, p11.GeneralError, p11.FunctionFailed,
    p11.ObjectHandleInvalid, p11.NoSuchToken, p11.SlotIDInvalid, p11.OperationActive, p11.UserNotLoggedIn,
)


def library(module: str) -> pkcs11.lib:
    """The PKCS#11 module, loaded once per process (racing first loads can hang)."""
    with _load_lock:
        if module not in _libraries:
            try:
                _libraries[module] = pkcs11.lib(module)
            except (RuntimeError, OSError) as error:
                raise PermanentError(f"cannot load PKCS#11 module {module}: {error}") from error
        return _libraries[module]


def reinitialize(module: str) -> None:
    """Re-read the module's slots (SoftHSM2 sees new token directories only after this).
    Ends every session this process has on that module."""
    with token_lock:
        library(module).reinitialize()


def raise_token_error(error: Exception, what: str) -> NoReturn:
    """Translate a PKCS#11 failure into certfactory's tree: transient ones are retried."""
    if isinstance(error, _TRANSIENT):
        raise TokenError(f"{what}: {type(error).__name__}") from error
    raise PermanentError(f"{what}: {type(error).__name__} {error}") from error


def _matching_tokens(module: str, serial: str | None, label: str | None) -> list[pkcs11.Token]:
    found = []
    for slot in library(module).get_slots(token_present=True):
        try:
            token = slot.get_token()
        except p11.PKCS11Error:
            continue  # a token another station process ejected since this one last read the slots
        if serial is not None and token.serial.decode().strip() != serial:
            continue
        if label is not None and token.label != label:
            continue
        found.append(token)
    return found


def tokens_by_serial(module: str) -> dict[str, pkcs11.Token]:
    """Every token present, by serial, in one pass over the slots."""
    with token_lock:
        try:
            return {token.serial.decode().strip(): token for token in _matching_tokens(module, None, None)}
        except p11.PKCS11Error as error:
            raise_token_error(error, f"listing the tokens of {module}")


def find_token(module: str, *, serial: str | None = None, label: str | None = None,
               refresh: Callable[[], None] | None = None) -> pkcs11.Token:
    """Exactly one token by serial or label; re-reads the slots once if it is not seen
    (with ``refresh`` when the caller has its own way, else :func:`reinitialize`)."""
    for attempt in (1, 2):
        with token_lock:
            try:
                found = _matching_tokens(module, serial, label)
            except p11.PKCS11Error as error:
                raise_token_error(error, f"listing the tokens of {module}")
        if len(found) == 1:
            return found[0]
        if len(found) > 1:
            raise PermanentError(f"more than one token matches {serial or label}")
        if attempt == 1:
            (refresh or (lambda: reinitialize(module)))()
    raise TokenError(f"token {serial or label} is not present")


@contextmanager
def user_session(token: pkcs11.Token, pin: str, *, rw: bool = True) -> Iterator[pkcs11.Session]:
    """A logged-in session for a short piece of work (device tokens)."""
    try:
        with token_lock, token.open(rw=rw, user_pin=pin) as session:
            yield session
    except p11.PinIncorrect:
        raise PermanentError(f"token {token.serial.decode()}: user PIN rejected") from None
    except p11.PKCS11Error as error:
        raise_token_error(error, f"token {token.serial.decode()}")


def key_id_for(request_id: str) -> bytes:
    """CKA_ID of a request's key pair: derived, so a redelivery finds the key it made."""
    return hashlib.sha256(b"certfactory-key:" + request_id.encode()).digest()[:16]


def find_private_key(session: pkcs11.Session, *, key_id: bytes | None = None,
                     label: str | None = None) -> pkcs11.PrivateKey | None:
    """The one private key with this id or label, or None when there is none."""
    kwargs: dict[str, Any] = {"object_class": ObjectClass.PRIVATE_KEY}
    if key_id is not None:
        kwargs["id"] = key_id
    if label is not None:
        kwargs["label"] = label
    try:
        return session.get_key(**kwargs)
    except p11.NoSuchKey:
        return None
    except p11.MultipleObjectsReturned:
        raise PermanentError(f"more than one private key with id/label {key_id!r}/{label}") from None


def destroy_public_keys(session: pkcs11.Session, key_id: bytes) -> int:
    """Destroy the public keys with this id. SoftHSM2 stores a new pair's public half
    first, so a process killed mid-generation can leave one without its private key;
    call only when no private key has this id. Returns how many were destroyed."""
    leftovers = list(session.get_objects({Attribute.CLASS: ObjectClass.PUBLIC_KEY, Attribute.ID: key_id}))
    for leftover in leftovers:
        leftover.destroy()
    return len(leftovers)


def generate_keypair(session: pkcs11.Session, key_type: str, key_id: bytes, label: str) -> bytes:
    """Generate a stored, sensitive, non-extractable key pair ON the token.
    Returns the public key as SubjectPublicKeyInfo DER."""
    kind, size = KEY_SPECS[key_type]
    private_template = dict(PRIVATE_KEY_TEMPLATE)
    if kind == KeyType.RSA:
        _, private = session.generate_keypair(
            KeyType.RSA, size, id=key_id, label=label, store=True,
            public_template=PUBLIC_KEY_TEMPLATE, private_template=private_template)
    else:
        params = session.create_domain_parameters(
            KeyType.EC, {Attribute.EC_PARAMS: encode_named_curve_parameters(str(size))}, local=True)
        _, private = params.generate_keypair(
            id=key_id, label=label, store=True,
            public_template=PUBLIC_KEY_TEMPLATE, private_template=private_template)
    return public_key_der(session, private)


def public_key_der(session: pkcs11.Session, private: pkcs11.PrivateKey) -> bytes:
    """SubjectPublicKeyInfo DER of the public half of a token key pair."""
    public = session.get_key(object_class=ObjectClass.PUBLIC_KEY, id=private[Attribute.ID])
    if private.key_type == KeyType.RSA:
        numbers = rsa.RSAPublicNumbers(int.from_bytes(public[Attribute.PUBLIC_EXPONENT], "big"),
                                       int.from_bytes(public[Attribute.MODULUS], "big"))
        key: PublicKeyTypes = numbers.public_key()
        return key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return encode_ec_public_key(public)


def store_certificate(session: pkcs11.Session, der: bytes, *, key_id: bytes, label: str, subject: bytes) -> None:
    """Write an X.509 certificate object onto the token unless one with this id is there."""
    existing = list(session.get_objects({Attribute.CLASS: ObjectClass.CERTIFICATE, Attribute.ID: key_id}))
    if existing:
        return
    session.create_object({
        Attribute.CLASS: ObjectClass.CERTIFICATE,
        Attribute.CERTIFICATE_TYPE: pkcs11.CertificateType.X_509,
        Attribute.TOKEN: True,
        Attribute.PRIVATE: False,
        Attribute.ID: key_id,
        Attribute.LABEL: label,
        Attribute.SUBJECT: subject,
        Attribute.VALUE: der,
    })


def token_private_key(session: pkcs11.Session, private: pkcs11.PrivateKey, public_der: bytes) -> PrivateKeyTypes:
    """Wrap a token key in pyca/cryptography's private-key interface."""
    public = serialization.load_der_public_key(public_der)
    if isinstance(public, rsa.RSAPublicKey):
        return TokenRSAKey(private, public)
    if isinstance(public, ec.EllipticCurvePublicKey):
        return TokenECKey(private, public)
    raise PermanentError(f"unsupported token key type {type(public).__name__}")


_RSA_MECHANISMS = {"sha256": Mechanism.SHA256_RSA_PKCS, "sha384": Mechanism.SHA384_RSA_PKCS,
                   "sha512": Mechanism.SHA512_RSA_PKCS}


class TokenRSAKey(rsa.RSAPrivateKey):
    """An RSA private key that stays on its token; only ``sign`` works."""

    def __init__(self, private: pkcs11.PrivateKey, public: rsa.RSAPublicKey) -> None:
        self._private = private
        self._public = public

    def sign(self, data: bytes, padding: padding.AsymmetricPadding,
             algorithm: hashes.HashAlgorithm | utils.Prehashed) -> bytes:
        if not isinstance(padding, _PKCS1v15) or algorithm.name not in _RSA_MECHANISMS:
            raise PermanentError(f"token RSA signing supports PKCS#1 v1.5 with SHA-2, not {padding.name}")
        try:
            with token_lock:
                return self._private.sign(data, mechanism=_RSA_MECHANISMS[algorithm.name])
        except p11.PKCS11Error as error:
            raise_token_error(error, "RSA signature on the token")

    @property
    def key_size(self) -> int:
        return self._public.key_size

    def public_key(self) -> rsa.RSAPublicKey:
        return self._public

    def decrypt(self, ciphertext: bytes, padding: padding.AsymmetricPadding) -> bytes:
        raise PermanentError("token keys are for signing only")

    def private_numbers(self) -> rsa.RSAPrivateNumbers:
        raise PermanentError("a token private key never leaves the token")

    def private_bytes(self, *args: Any, **kwargs: Any) -> bytes:
        raise PermanentError("a token private key never leaves the token")

    def __copy__(self) -> TokenRSAKey:
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> TokenRSAKey:
        return self


_PKCS1v15 = padding.PKCS1v15


class TokenECKey(ec.EllipticCurvePrivateKey):
    """An EC private key that stays on its token: hash here, CKM_ECDSA there, DER r‖s."""

    def __init__(self, private: pkcs11.PrivateKey, public: ec.EllipticCurvePublicKey) -> None:
        self._private = private
        self._public = public

    def sign(self, data: bytes, signature_algorithm: ec.EllipticCurveSignatureAlgorithm) -> bytes:
        algorithm = signature_algorithm.algorithm
        if isinstance(algorithm, utils.Prehashed):
            digest = data
        else:
            hasher = hashes.Hash(algorithm)
            hasher.update(data)
            digest = hasher.finalize()
        try:
            with token_lock:
                raw = self._private.sign(digest, mechanism=Mechanism.ECDSA)
        except p11.PKCS11Error as error:
            raise_token_error(error, "ECDSA signature on the token")
        half = len(raw) // 2
        return utils.encode_dss_signature(int.from_bytes(raw[:half], "big"), int.from_bytes(raw[half:], "big"))

    @property
    def curve(self) -> ec.EllipticCurve:
        return self._public.curve

    @property
    def key_size(self) -> int:
        return self._public.key_size

    def public_key(self) -> ec.EllipticCurvePublicKey:
        return self._public

    def exchange(self, algorithm: ec.ECDH, peer_public_key: ec.EllipticCurvePublicKey) -> bytes:
        raise PermanentError("token keys are for signing only")

    def private_numbers(self) -> ec.EllipticCurvePrivateNumbers:
        raise PermanentError("a token private key never leaves the token")

    def private_bytes(self, *args: Any, **kwargs: Any) -> bytes:
        raise PermanentError("a token private key never leaves the token")

    def __copy__(self) -> TokenECKey:
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> TokenECKey:
        return self

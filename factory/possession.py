"""Proof that the public key the ledger holds for a request is the key on its device.

Right after generating a key pair, the device signs a statement naming the request, the
device and the public key; the proof travels in the audit trail (hash-chained) with the
`key_generated` transition. Before the CA signs anything, the sign stage verifies it over
the public key the ledger holds: a key swapped in the ledger, or one recorded for another
device, has no valid proof and is refused.
"""

from __future__ import annotations

import hashlib

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes


def statement(request_id: str, device_serial: str, public_der: bytes) -> bytes:
    """What the device signs: this request's key, on this device."""
    return b"certfactory-possession:%s:%s:%s" % (request_id.encode(), device_serial.encode(),
                                                 hashlib.sha256(public_der).hexdigest().encode())


def prove(key: PrivateKeyTypes, data: bytes) -> bytes:
    """Sign ``data`` with the device's key (SHA-256; PKCS#1 v1.5 or ECDSA)."""
    if isinstance(key, rsa.RSAPrivateKey):
        return key.sign(data, padding.PKCS1v15(), hashes.SHA256())
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return key.sign(data, ec.ECDSA(hashes.SHA256()))
    raise TypeError(f"unsupported key type {type(key).__name__}")


def verify(public_der: bytes, data: bytes, proof: bytes) -> bool:
    """Whether ``proof`` is a signature over ``data`` by the key ``public_der``."""
    public = serialization.load_der_public_key(public_der)
    try:
        if isinstance(public, rsa.RSAPublicKey):
            public.verify(proof, data, padding.PKCS1v15(), hashes.SHA256())
        elif isinstance(public, ec.EllipticCurvePublicKey):
            public.verify(proof, data, ec.ECDSA(hashes.SHA256()))
        else:
            return False
    except InvalidSignature:
        return False
    return True

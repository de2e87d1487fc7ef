"""The one error tree of certfactory. Each error carries data; the edge (CLI, HTTP)
turns it into a message for people.

    CertFactoryError
    ├── PermanentError          never retried: the same input fails the same way
    │   ├── Rejected            a request broke a validation rule (code, field)
    │   ├── PolicyError         the CA refuses: wrong public key, profile violation
    │   ├── LintError           a certificate failed its lint before signing
    │   ├── EndorsementRefused  a batch its agency's head did not endorse, refused whole
    │   └── ConfigurationError  a setting is missing or wrong (names the variable)
    ├── TransientError          retried with backoff: token busy, server away
    │   └── TokenError          a PKCS#11 call failed in a way worth retrying
    └── StateConflict           a compare-and-set found another state than expected
"""

from __future__ import annotations


class CertFactoryError(Exception):
    """Root of every error certfactory raises on purpose."""

    def diagnostics(self) -> str:
        """A message for people: what went wrong and, where known, what to do."""
        return str(self)


class PermanentError(CertFactoryError):
    """Retrying cannot help; the request goes to `rejected` or `failed` at once."""

    code = "permanent"


class Rejected(PermanentError):
    """A request broke a validation rule."""

    def __init__(self, code: str, field: str | None, message: str) -> None:
        super().__init__(f"{field or 'request'}: {message} [{code}]")
        self.code = code
        self.field = field
        self.message = message


class PolicyError(PermanentError):
    """The CA refuses to issue: the request or key breaks the certificate policy."""

    code = "policy"


class LintError(PermanentError):
    """A to-be-signed certificate failed its lint; nothing was signed."""

    code = "lint"


class EndorsementRefused(PermanentError):
    """A batch is refused whole: unendorsed, wrongly signed, or its agency unknown.
    ``reason`` is a stable English phrase (factory.endorsement names them)."""

    code = "endorsement"

    def __init__(self, reason: str, agency_code: str | None, detail: str = "", vietnamese: str = "") -> None:
        super().__init__(f"batch refused: {reason}{f' ({detail})' if detail else ''}"
                         + (f" / Lô bị từ chối: {vietnamese}" if vietnamese else ""))
        self.reason = reason
        self.agency_code = agency_code
        self.detail = detail


class ConfigurationError(PermanentError):
    """A setting is missing or wrong; the message names the variable."""

    code = "configuration"


class TransientError(CertFactoryError):
    """Worth retrying with backoff: a token, a server or a lock is briefly away."""

    code = "transient"


class TokenError(TransientError):
    """A PKCS#11 call failed (token removed, busy, session lost)."""

    code = "token"


class StateConflict(CertFactoryError):
    """A compare-and-set found the request in another state than the one expected."""

    def __init__(self, entity: str, key: str, expected: str, actual: str | None) -> None:
        super().__init__(f"{entity} {key}: expected state {expected}, found {actual}")
        self.entity = entity
        self.key = key
        self.expected = expected
        self.actual = actual


class NotFound(PermanentError):
    """An id or serial the ledger does not hold."""

    code = "not_found"

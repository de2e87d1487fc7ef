"""Checks a relying party would make: RFC 5280 lint with pkilint."""

from __future__ import annotations

from pkilint import loader
from pkilint.pkix import certificate, extension, name
from pkilint.validation import ValidationFindingSeverity

_LINTER = certificate.create_pkix_certificate_validator_container(
    certificate.create_decoding_validators(name.ATTRIBUTE_TYPE_MAPPINGS, extension.EXTENSION_MAPPINGS),
    [
        certificate.create_issuer_validator_container([]),
        certificate.create_validity_validator_container(),
        certificate.create_subject_validator_container([]),
        certificate.create_extensions_validator_container([]),
        certificate.create_spki_validator_container([]),
    ],
)


def lint_rfc5280(pem_or_der: bytes, threshold: ValidationFindingSeverity = ValidationFindingSeverity.WARNING
                 ) -> list[str]:
    """pkilint's RFC 5280 findings at or above ``threshold`` (warnings and errors by default)."""
    document = loader.RFC5280CertificateDocumentLoader().load_document(pem_or_der, "certificate")
    findings = []
    for result in _LINTER.validate(document.root):
        for finding in result.finding_descriptions:
            if finding.finding.severity <= threshold:  # lower is more severe
                findings.append(f"{result.node.path}: {finding.finding.code} {finding.message or ''}".strip())
    return findings

"""The issuance process, one method per stage, each safe to run twice.

A stage reads the request's state from the ledger, does only what is not done yet,
and moves the state with a compare-and-set. Each returns True when the next stage
should be sent, False when the request has left the path (or was already beyond this
stage, so the message that would follow was sent before). Intent is recorded before
every side effect: the device and key id before the key, the serial before the
signature.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from factory import ca as ca_profile
from factory import possession, revocation, tokens
from factory.calendar import WorkingCalendar
from factory.ca import CAToken, Policy
from factory.devices import Station
from factory.errors import PermanentError, PolicyError, StateConflict, TransientError
from factory.ledger import Ledger
from factory.publication import IndexCache, Repository, serial_hex
from factory.validation import validate_record
from schemas.request import RequestRecord
from schemas.status import Rejection
from schemas.status import RequestState as S

if TYPE_CHECKING:
    from sqlalchemy.engine import Row

log = logging.getLogger(__name__)

READY_WORKING_DAYS = 3
PUBLISH_WORKING_DAYS = 1


class NotYet(TransientError):
    """The agency asked for a later effective time: publish then, not now."""

    def __init__(self, at: dt.datetime) -> None:
        super().__init__(f"publication waits for the requested effective time {at.isoformat()}")
        self.at = at


def _aware(at: dt.datetime) -> dt.datetime:
    return at if at.tzinfo else at.replace(tzinfo=dt.UTC)


@dataclass(frozen=True)
class Pickup:
    """Where and when an agency collects its devices."""

    address: str
    hours: str


class Issuance:
    """The stages of one request's issuance, over the ledger and the parts a host has.

    A host passes only the parts it holds: a station host a Station, the CA host the
    CA token; a stage whose part is missing fails loudly rather than guessing."""

    def __init__(self, ledger: Ledger, *, policy: Policy, repository: Repository, calendar: WorkingCalendar,
                 pickup: Pickup, station: Station | None = None, ca_token: CAToken | None = None,
                 chain: tuple[x509.Certificate, x509.Certificate] | None = None,
                 clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
                 observe: Callable[[str, str, float], None] = lambda operation, key_type, seconds: None,
                 simulated_sign_seconds: float = 0.0) -> None:
        self.ledger = ledger
        self.policy = policy
        self.repository = repository
        self.calendar = calendar
        self.pickup = pickup
        self.station = station
        self.ca_token = ca_token
        self.chain = chain  # (root, issuing)
        self.clock = clock
        self.observe = observe  # token operation timings (keygen, sign) by key type
        self.simulated_sign_seconds = simulated_sign_seconds  # a slow CA HSM, simulated (load tests)
        self._index = IndexCache()

    # -- helpers ----------------------------------------------------------------------------

    def _row(self, request_id: str) -> tuple[S, Row]:
        row = self.ledger.get_request(request_id)
        if row is None:
            raise PermanentError(f"request {request_id} is not in the ledger")
        return S(row.state), row

    def _load(self, request_id: str) -> tuple[S, RequestRecord, Row]:
        state, row = self._row(request_id)
        return state, RequestRecord.model_validate_json(row.record), row

    @staticmethod
    def _beyond(state: S, stage_done: S) -> bool:
        order = list(S)[:8]
        return state in order and order.index(state) >= order.index(stage_done)

    def _need(self, part: object, name: str) -> None:
        if part is None:
            raise PermanentError(f"this worker has no {name}: route the stage to the host that holds it")

    # -- stages -----------------------------------------------------------------------------

    def validate(self, request_id: str) -> bool:
        """received → validated (or rejected with the first rule it broke)."""
        state, record, row = self._load(request_id)
        if state != S.received:
            return self._beyond(state, S.validated)
        now = self.clock()
        reasons = validate_record(record, today=now.date(), allowed_key_types=self.policy.allowed_key_types)
        earlier = self.ledger.earlier_live_request(record.citizen_id, request_id)
        if earlier is not None:
            reasons.append(Rejection(code="citizen_id.duplicate", field="citizen_id",
                                     message="citizen_id: this person already has a live certificate or a request "
                                             "in flight / Người này đã có chứng thư số hoặc hồ sơ đang xử lý"))
        if reasons:
            first = reasons[0]
            self._settle(request_id, S.received, S.rejected, reason_code=first.code,
                         reason=json.dumps([r.model_dump() for r in reasons], ensure_ascii=False),
                         detail={"reasons": [r.code for r in reasons]})
            return False
        deadline = self.calendar.deadline(_aware(row.received_at), READY_WORKING_DAYS)
        self._settle(request_id, S.received, S.validated, ready_deadline=deadline)
        return True

    def generate_key(self, request_id: str) -> bool:
        """validated → key_generated: claim a device, set its PINs, make the key on it."""
        self._need(self.station, "personalisation station")
        assert self.station is not None
        state, record, row = self._load(request_id)
        if state != S.validated:
            return self._beyond(state, S.key_generated)
        key_id = tokens.key_id_for(request_id)
        device = self.ledger.device_for_request(request_id)
        if device is not None:  # a redelivery: another station process may have changed the device
            self.station.refresh()
        if device is not None and device.state == "claimed" and not self.station.present(device.serial):
            self.ledger.remove_claimed_device(device.serial, request_id)  # pulled out: take another
            device = None
        while device is None:
            device = self.ledger.claim_blank_device(self.station.name, request_id, key_id.hex())
            if device is None:
                self._provision()
        self.station.personalise(device.serial)
        started = time.perf_counter()
        serial = device.serial
        public_der, proof = self.station.generate_key(
            serial, record.key_type.value, key_id, f"cf-{request_id}",
            lambda public: possession.statement(request_id, serial, public))
        self.observe("keygen", record.key_type.value, time.perf_counter() - started)
        with self.ledger.transaction() as connection:
            self.ledger.transition(request_id, S.validated, S.key_generated, connection=connection,
                                   detail={"device": device.serial, "key_type": record.key_type.value,
                                           "possession": base64.b64encode(proof).decode()})
            self.ledger.record_device_key(connection, device.serial, public_der)
        return True

    def _provision(self) -> None:
        assert self.station is not None
        known = self.ledger.device_serials(self.station.name)
        fresh = self.station.provision_blank(self.station.ports, known)
        self.ledger.add_blank_devices(self.station.name, fresh)

    def sign(self, request_id: str) -> bool:
        """key_generated → signed: serial first, then the CA signs over the device's key."""
        self._need(self.ca_token, "CA token")
        self._need(self.chain, "CA chain")
        assert self.ca_token is not None and self.chain is not None
        state, record, row = self._load(request_id)
        if state != S.key_generated:
            return self._beyond(state, S.signed)
        device = self.ledger.device_for_request(request_id)
        if device is None or device.public_key is None:
            raise PolicyError(f"request {request_id} has no device key recorded: refusing to sign")
        self._check_possession(request_id, device.serial, device.public_key)
        reserved = self.ledger.reserve_certificate(request_id, serial_hex(ca_profile.new_serial()))
        if reserved.der is None:
            builder = ca_profile.subscriber_builder(record, device.public_key, int(reserved.serial, 16),
                                                    self.chain[1], self.clock(), self.policy)
            started = time.perf_counter()
            certificate = ca_profile.sign(builder, self.ca_token.key(ca_profile.ISSUING_LABEL))
            if self.simulated_sign_seconds:
                time.sleep(self.simulated_sign_seconds)
            self.observe("sign", record.key_type.value, time.perf_counter() - started)
            if certificate.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo) \
                    != device.public_key:
                raise PolicyError("signed certificate's public key is not the device's")
            der = certificate.public_bytes(Encoding.DER)
            not_before, not_after = certificate.not_valid_before_utc, certificate.not_valid_after_utc
        else:
            der, not_before, not_after = reserved.der, reserved.not_before, reserved.not_after
        with self.ledger.transaction() as connection:
            self.ledger.store_certificate(reserved.serial, der, not_before, not_after, connection)
            self.ledger.transition(request_id, S.key_generated, S.signed, connection=connection,
                                   detail={"serial": reserved.serial})
        return True

    def _check_possession(self, request_id: str, device_serial: str, public_der: bytes) -> None:
        """Refuse a public key the device did not prove it holds (``factory.possession``)."""
        proofs = [json.loads(event.detail).get("possession") for event in self.ledger.audit_trail(request_id)
                  if event.kind == "transition" and event.to_state == S.key_generated.value and event.detail]
        data = possession.statement(request_id, device_serial, public_der)
        if not proofs or not proofs[-1] or not possession.verify(public_der, data, base64.b64decode(proofs[-1])):
            raise PolicyError(f"the public key recorded for request {request_id} is not proven to be the key on "
                              f"device {device_serial}: refusing to sign")

    def package(self, request_id: str) -> bool:
        """signed → packaged: certificate and chain onto the device, device off the station."""
        self._need(self.station, "personalisation station")
        self._need(self.chain, "CA chain")
        assert self.station is not None and self.chain is not None
        state, record, row = self._load(request_id)
        if state != S.signed:
            return self._beyond(state, S.packaged)
        device = self.ledger.device_for_request(request_id)
        certificate_row = self.ledger.certificate_for_request(request_id)
        if device is None or certificate_row is None or certificate_row.der is None:
            raise PermanentError(f"request {request_id} is signed but its device or certificate is missing")
        certificate = x509.load_der_x509_certificate(certificate_row.der)
        key_id = tokens.key_id_for(request_id)
        if device.state == "personalised":
            # Off the station first, then the certificates onto it where it is handed over:
            # both steps are safe to repeat, so a crash between them is finished by a retry.
            self.station.eject(device.serial, device.token_dir)
            chain = [(c.public_bytes(Encoding.DER), c.subject.public_bytes(), label)
                     for c, label in ((self.chain[1], "issuing-ca"), (self.chain[0], "root-ca"))]
            public_der = certificate.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
            self.station.write_certificates(device.serial, key_id, f"cf-{request_id}",
                                            (certificate_row.der, certificate.subject.public_bytes(), public_der),
                                            chain)
            self.station.write_manifest(device.serial, {
                "device_serial": device.serial, "certificate_serial": certificate_row.serial,
                "request_id": request_id, "request_ref": row.request_ref, "agency_code": row.agency_code,
                "full_name": record.full_name, "position": record.position, "organization": record.organization,
                "key_type": record.key_type.value, "packaged_at": self.clock().isoformat(),
                "pin_envelope": f"{device.serial}.json",
            })
            self.station.seal_envelope(device.serial, self.clock().isoformat())
            with self.ledger.transaction() as connection:  # one commit for the device and the request
                self.ledger.set_device(device.serial, "personalised", "packaged", connection=connection)
                self.ledger.transition(request_id, S.signed, S.packaged, connection=connection,
                                       detail={"device": device.serial})
            return True
        if device.state == "packaged":
            self.station.eject(device.serial, device.token_dir)  # finishes a move a crash interrupted
        self._settle(request_id, S.signed, S.packaged, detail={"device": device.serial})
        return True

    def await_activation(self, request_id: str) -> bool:
        """packaged → awaiting_activation: tell the agency where and when to collect; park."""
        state, record, row = self._load(request_id)
        if state != S.packaged:
            return False
        with self.ledger.transaction() as connection:
            self.ledger.add_outbox(connection, request_id, "pickup_notice", {
                "agency_code": row.agency_code, "request_ref": row.request_ref, "device_serial": row.device_serial,
                "full_name": record.full_name, "pickup_address": self.pickup.address,
                "pickup_hours": self.pickup.hours, "ready_since": self.clock().isoformat(),
            })
            self.ledger.transition(request_id, S.packaged, S.awaiting_activation, connection=connection)
        return False  # parked: activation resumes it

    ACTIVATIONS_PER_TRANSACTION = 200  # a ministry's thousands hold the writers' lock in short turns

    def activate_many(self, request_ids: Sequence[str], effective_at: dt.datetime | None = None) -> list[str]:
        """awaiting_activation → activated: the agency handed the devices over and asks for
        the effective time (now, or a later ``effective_at``: publication waits for it). A
        few hundred to a transaction rather than one each. Returns the ids this call
        activated, in order (send publish for those); the others were not awaiting
        activation (already activated, or not yet packaged) and are left as they are."""
        now = self.clock()
        fields = {"activation_requested_at": now,
                  "effective_at": effective_at if effective_at and effective_at > now else None,
                  "publish_deadline": self.calendar.deadline(now, PUBLISH_WORKING_DAYS)}
        activated: list[str] = []
        for start in range(0, len(request_ids), self.ACTIVATIONS_PER_TRANSACTION):
            with self.ledger.transaction() as connection:
                for request_id in request_ids[start:start + self.ACTIVATIONS_PER_TRANSACTION]:
                    try:  # the compare-and-set alone decides: a conflict writes nothing
                        self.ledger.transition(request_id, S.awaiting_activation, S.activated,
                                               connection=connection, **fields)
                    except StateConflict:
                        continue
                    activated.append(request_id)
        return activated

    def publish(self, request_id: str) -> bool:
        """activated → published: into the repository, hold released, effective from now."""
        state, row = self._row(request_id)
        if state != S.activated:
            return False
        certificate_row = self.ledger.certificate_for_request(request_id)
        if certificate_row is None or certificate_row.der is None:
            raise PermanentError(f"request {request_id} has no signed certificate to publish")
        requested = row.effective_at
        now = self.clock()
        if requested is not None and _aware(requested) > now:
            raise NotYet(_aware(requested))
        certificate = x509.load_der_x509_certificate(certificate_row.der)
        self.repository.publish(certificate)
        with self.ledger.transaction() as connection:
            self.ledger.mark_published(certificate_row.serial, now, connection)
            self.ledger.transition(request_id, S.activated, S.published, connection=connection, effective_at=now,
                                   detail={"serial": certificate_row.serial})
        return False

    def refresh_index(self) -> None:
        """Bring the repository's index.json up to the ledger: what was published lately is
        read and appended (``IndexCache``); a whole rewrite when this process has not
        written it yet or the counts disagree. Nothing new, nothing written."""
        with self._index.lock:
            since = self._index.since()
            fresh = self._index.fresh(self.ledger.index_entries(since)) if since is not None else []
            if since is None or self._index.count + len(fresh) != self.ledger.published_count():
                entries = self.ledger.index_entries()
                self.repository.write_index(entries)
                self._index.add(entries, whole=True)
            elif fresh:
                self.repository.append_index(fresh)
                self._index.add(fresh)

    def refresh_crl(self) -> dict[str, object]:
        """Sign and write a fresh CRL with the issuing key on the CA token (O(held +
        revoked): debounce it, never per certificate). Returns its summary."""
        self._need(self.ca_token, "CA token")
        self._need(self.chain, "CA chain")
        assert self.ca_token is not None and self.chain is not None
        return revocation.issue_crl(self.ledger, self.chain[1], self.ca_token.key(ca_profile.ISSUING_LABEL),
                                    self.repository.root, self.clock())

    def fail(self, request_id: str, reason_code: str, reason: str) -> None:
        """Park a request in `failed` with the reason (exhausted retries, permanent errors)."""
        row = self.ledger.get_request(request_id)
        if row is None or S(row.state) in (S.published, S.rejected, S.failed, S.revoked):
            return
        try:
            self.ledger.transition(request_id, S(row.state), S.failed, reason_code=reason_code, reason=reason,
                                   detail={"reason_code": reason_code, "reason": reason})
        except StateConflict:
            pass  # it moved meanwhile; whoever moved it owns it

    def _settle(self, request_id: str, expected: S, new: S, *, detail: dict[str, object] | None = None,
                **fields: object) -> None:
        try:
            self.ledger.transition(request_id, expected, new, detail=detail, **fields)
        except StateConflict as conflict:
            if conflict.actual == new.value:
                return  # a concurrent delivery of the same message got here first
            raise



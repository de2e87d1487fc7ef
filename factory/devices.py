"""Device lifecycle on a personalisation station: blank → personalised → packaged.

A station has ports (a SoftHSM2 token directory here, USB slots in production) and a
shelf of blank devices delivered but not plugged in; blank devices are plugged in a
batch (its ports) at a time. Personalising one sets the subscriber's PINs (written to
the PIN envelope first, so a crash can always be recovered) and generates the key on
it; packaging ejects it from the station and writes the certificate and chain onto it
where it is handed over, so the station's token directory, and with it every lookup,
stays small.
"""

from __future__ import annotations

import fcntl
import json
import os
import secrets
import shutil
import string
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pkcs11.exceptions as p11

from factory import possession, softhsm, tokens
from factory.errors import PermanentError, PolicyError, TokenError

# What a blank device ships with, like a USB token's printed transport PINs: not secret.
TRANSPORT_SO_PIN = "blank-so-0000"
TRANSPORT_USER_PIN = "blank-user-0000"
_PIN_ALPHABET = string.ascii_letters + string.digits


@dataclass(frozen=True)
class PinEnvelope:
    """The sealed envelope's content. Lives only in a 0600 file, never in the ledger."""

    serial: str
    user_pin: str
    so_pin: str


def _new_pin(length: int) -> str:
    return "".join(secrets.choice(_PIN_ALPHABET) for _ in range(length))


class Station:
    """A personalisation station: its token directory, the devices it ejects, the envelopes."""

    def __init__(self, name: str, home: Path, module: str, ports: int = 8, *, storage: Path | None = None,
                 simulated_keygen_seconds: float = 0.0) -> None:
        self.name = name
        self.module = module
        self.ports = ports
        # a slow device (a USB token takes seconds per RSA key) simulated on SoftHSM2
        self.simulated_keygen_seconds = simulated_keygen_seconds
        # serial → token as this process last read the slots: listing every slot costs
        # a call per token, three times per device; forgotten whenever the slots are re-read
        self._tokens: dict[str, Any] = {}
        # The devices' tokens (ports, shelf, packaged) live in ``storage``: SoftHSM2 rewrites a
        # token's object file once per attribute, which on a journaling disk costs a real
        # token nothing like it (PARTS.md); the PIN envelopes stay in the home, on disk.
        storage = storage or home
        self.root = storage / "station" / name
        self.tokendir = self.root / "tokens"
        self.config = self.root / "softhsm2.conf"
        self.devices_root = storage / "devices"
        self.envelopes = home / "pin-envelopes"

    def prepare(self) -> None:
        """Create the station's directories and its softhsm2.conf (idempotent)."""
        if not self.config.exists():
            softhsm.write_config(self.config, self.tokendir)
        self.devices_root.mkdir(parents=True, exist_ok=True)
        self.envelopes.mkdir(parents=True, exist_ok=True, mode=0o700)

    @contextmanager
    def _lock(self, name: str, mode: int = fcntl.LOCK_EX) -> Iterator[None]:
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / name, "w") as handle:
            fcntl.flock(handle, mode)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    # Re-reading the slots lists the token directory, then reads every token's
    # token.object; setting a device's PINs rewrites its token.object in place, and
    # ejecting moves a token out. A token half rewritten or gone between the listing and
    # the reading has no serial, and two such tokens at once make SoftHSM2 abort the
    # process (a duplicate slot id). PIN changes and ejections share this lock;
    # re-reading the slots takes it alone.
    SLOTS_LOCK = ".slots.lock"

    def provision_blank(self, count: int, known: set[str]) -> list[tuple[str, str]]:
        """Plug ``count`` blank devices into the station (one lock, then one re-read of
        the slots). Returns (serial, token directory) of devices the ledger does not know
        yet — also ones an earlier crashed call left behind."""
        self.prepare()
        with self._lock(".provision.lock"):
            present = softhsm.token_directories(self.tokendir)
            unknown = {s: d for s, d in present.items() if s not in known}
            self._make_blank(max(0, count - len(unknown)))
            fresh = {s: d for s, d in softhsm.token_directories(self.tokendir).items() if s not in known}
        self.refresh()
        return sorted(fresh.items())

    def _make_blank(self, count: int) -> None:
        """Plug ``count`` blank devices in: from the shelf first, the rest made here (each
        moved in whole: ``softhsm.init_tokens``). Under the provisioning lock."""
        count -= self._take_from_stock(count)
        if count > 0:
            softhsm.init_tokens(self.tokendir, count, "blank", TRANSPORT_SO_PIN, TRANSPORT_USER_PIN)

    # -- the shelf of blank devices -----------------------------------------------------------

    @property
    def stock(self) -> Path:
        """The shelf: blank devices delivered to the station and not plugged in yet. No
        station process reads it, so filling it never disturbs the slots."""
        return self.root / "stock"

    def stock_blank(self, count: int, progress: Callable[[int], None] | None = None) -> int:
        """Put ``count`` blank devices on the shelf (a vendor's shipment arriving), 16 at a
        time. Provisioning then plugs devices in from the shelf, a rename each, before
        making any itself."""
        self.stock.mkdir(parents=True, exist_ok=True)
        made = 0
        while made < count:
            batch = min(16, count - made)
            softhsm.init_tokens(self.stock, batch, "blank", TRANSPORT_SO_PIN, TRANSPORT_USER_PIN)
            made += batch
            if progress:
                progress(made)
        return made

    def stocked(self) -> int:
        """Blank devices on the shelf."""
        return len(softhsm.token_directories(self.stock))

    def _take_from_stock(self, count: int) -> int:
        """Plug up to ``count`` devices in from the shelf (under the provisioning lock)."""
        taken = 0
        if count > 0 and self.stock.is_dir():
            with os.scandir(self.stock) as entries:  # the shelf can hold thousands: take the first few
                for entry in entries:
                    if entry.is_dir() and entry.name.count("-") == 4:
                        os.rename(entry.path, self.tokendir / entry.name)
                        taken += 1
                        if taken == count:
                            break
        return taken

    def refresh(self) -> None:
        """Re-read the station's slots. SoftHSM2 keeps each process's view of a token as it
        was when the process last read the slots (PINs included), and another station
        process may have personalised or ejected a device since: a stage that touches a
        device another process may have changed starts here."""
        with self._lock(self.SLOTS_LOCK):
            self._tokens.clear()
            os.environ["SOFTHSM2_CONF"] = str(self.config)  # back from a packaged device's (_packaged_token)
            tokens.reinitialize(self.module)

    def _token(self, serial: str) -> Any:
        """The device's token as this process sees it (re-reading the slots once if unseen)."""
        if serial not in self._tokens:
            self._tokens.update(tokens.tokens_by_serial(self.module))  # one pass reads every slot
        if serial not in self._tokens:
            self.refresh()
            self._tokens.update(tokens.tokens_by_serial(self.module))
        if serial not in self._tokens:
            raise TokenError(f"token {serial} is not present")
        return self._tokens[serial]

    def present(self, serial: str) -> bool:
        """Whether the station sees the device: a USB token can be pulled out, and one whose
        PIN change a crash cut short may no longer be readable."""
        try:
            self._token(serial)
        except TokenError:
            return False
        return True

    # -- PIN envelopes ----------------------------------------------------------------------

    def envelope_path(self, serial: str) -> Path:
        """Where a device's PIN envelope lives."""
        return self.envelopes / f"{serial}.json"

    def read_envelope(self, serial: str) -> PinEnvelope | None:
        """The device's envelope, or None before personalisation."""
        path = self.envelope_path(serial)
        if not path.exists():
            return None
        data = json.loads(path.read_text())
        return PinEnvelope(serial=serial, user_pin=data["user_pin"], so_pin=data["so_pin"])

    def _write_envelope(self, envelope: PinEnvelope, **extra: str) -> None:
        path = self.envelope_path(envelope.serial)
        temporary = path.with_suffix(".tmp")
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            json.dump({"serial": envelope.serial, "user_pin": envelope.user_pin, "so_pin": envelope.so_pin, **extra},
                      handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)

    # -- personalisation ----------------------------------------------------------------------

    def personalise(self, serial: str) -> PinEnvelope:
        """Give the device its own SO and user PINs. The envelope is written before the
        PINs are set, so a retry after a crash knows them; safe to call again."""
        envelope = self.read_envelope(serial)
        fresh = envelope is None
        if envelope is None:
            envelope = PinEnvelope(serial=serial, user_pin=_new_pin(8), so_pin=_new_pin(16))
            self._write_envelope(envelope)
        token = self._token(serial)
        with self._lock(self.SLOTS_LOCK, fcntl.LOCK_SH), tokens.token_lock:  # flock first, as in refresh
            # A device whose envelope was just written still has its transport PIN.
            so_pin = TRANSPORT_SO_PIN if fresh else self._so_login_pin(token, envelope)
            try:
                with token.open(rw=True, so_pin=so_pin) as session:
                    if so_pin != envelope.so_pin:
                        session.set_pin(so_pin, envelope.so_pin)
                    session.init_pin(envelope.user_pin)
            except p11.PKCS11Error as error:
                tokens.raise_token_error(error, f"personalising device {serial}")
        return envelope

    @staticmethod
    def _so_login_pin(token: object, envelope: PinEnvelope) -> str:
        for candidate in (envelope.so_pin, TRANSPORT_SO_PIN):
            try:
                with token.open(rw=True, so_pin=candidate):  # type: ignore[attr-defined]
                    return candidate
            except p11.PinIncorrect:
                continue
            except p11.PKCS11Error as error:
                tokens.raise_token_error(error, f"opening device {envelope.serial} as SO")
        raise PermanentError(f"device {envelope.serial}: neither its envelope's nor the transport SO PIN opens it")

    def generate_key(self, serial: str, key_type: str, key_id: bytes, label: str,
                     statement: Callable[[bytes], bytes]) -> tuple[bytes, bytes]:
        """The device's key pair of this key id — the one already made, or a new one
        generated on the device — and its proof of possession: ``statement(public key)``
        signed with it (``factory.possession``), in the same session. Returns
        (SubjectPublicKeyInfo DER, proof)."""
        envelope = self._envelope_or_fail(serial)
        token = self._token(serial)
        with tokens.user_session(token, envelope.user_pin) as session:
            private = tokens.find_private_key(session, key_id=key_id)
            if private is None:
                tokens.destroy_public_keys(session, key_id)  # half a pair, from a crash mid-generation
                public_der = tokens.generate_keypair(session, key_type, key_id, label)
                if self.simulated_keygen_seconds:
                    time.sleep(self.simulated_keygen_seconds)
                private = tokens.find_private_key(session, key_id=key_id)
                if private is None:  # made a moment ago: the device was pulled out since
                    raise TokenError(f"device {serial} lost the key pair just generated on it: pulled out?")
            else:
                public_der = tokens.public_key_der(session, private)
            key = tokens.token_private_key(session, private, public_der)
            return public_der, possession.prove(key, statement(public_der))

    def _envelope_or_fail(self, serial: str) -> PinEnvelope:
        envelope = self.read_envelope(serial)
        if envelope is None:
            raise PermanentError(f"device {serial} has no PIN envelope: it was never personalised")
        return envelope

    # -- packaging ----------------------------------------------------------------------------

    def write_certificates(self, serial: str, key_id: bytes, label: str, certificate: tuple[bytes, bytes, bytes],
                           chain: list[tuple[bytes, bytes, str]]) -> None:
        """Write the subscriber certificate (DER, subject DER) and the CA chain onto the
        device, after checking the certificate's public key (SubjectPublicKeyInfo DER, the
        third item) is the one of the device's key pair. The device is packaged (ejected)
        already: it is opened where it is handed over (``_packaged_token``)."""
        envelope = self._envelope_or_fail(serial)
        token = self._packaged_token(serial)
        with tokens.user_session(token, envelope.user_pin) as session:
            der, subject, public_der = certificate
            private = tokens.find_private_key(session, key_id=key_id)
            if private is None or tokens.public_key_der(session, private) != public_der:
                raise PolicyError(f"device {serial} does not hold the key of this certificate")
            tokens.store_certificate(session, der, key_id=key_id, label=label, subject=subject)
            for ca_der, ca_subject, ca_label in chain:
                tokens.store_certificate(session, ca_der, key_id=ca_label.encode(), label=ca_label, subject=ca_subject)

    def _packaged_token(self, serial: str) -> Any:
        """A packaged device, seen alone: this process's module re-read with the device's
        own softhsm2.conf. SoftHSM2 shows a process another process's changes to a token
        (its PINs, set at personalisation) only after re-reading the slots, and re-reading
        the station's costs a read of every token there; the device's folder holds one."""
        config = self.device_dir(serial) / "softhsm2.conf"
        with tokens.token_lock:
            self._tokens.clear()
            os.environ["SOFTHSM2_CONF"] = str(config)  # SoftHSM2 reads it at every C_Initialize
            tokens.reinitialize(self.module)
            found = tokens.tokens_by_serial(self.module)
        if serial not in found:
            raise TokenError(f"device {serial} is not in {config.parent}")
        return found[serial]

    def device_dir(self, serial: str) -> Path:
        """Where a packaged device lives."""
        return self.devices_root / serial

    def eject(self, serial: str, token_dir: str) -> Path:
        """Take the device off the station: its token moves to devices/<serial>/ with a
        softhsm2.conf any PKCS#11 client can use. Safe to call again."""
        target = self.device_dir(serial)
        moved = target / "tokens" / token_dir
        source = self.tokendir / token_dir
        if source.exists() and not moved.exists():
            moved.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            with self._lock(self.SLOTS_LOCK, fcntl.LOCK_SH):  # never while another process reads the slots
                shutil.move(str(source), str(moved))
        elif not moved.exists():
            raise PermanentError(f"device {serial} is neither on station {self.name} nor packaged")
        softhsm.write_config(target / "softhsm2.conf", target / "tokens")
        os.chmod(target, 0o700)
        self._tokens.pop(serial, None)
        return target

    def write_manifest(self, serial: str, manifest: dict[str, object]) -> Path:
        """The handover manifest beside a packaged device: what the agency signs for.
        It names the person, the certificate and the device, never a PIN."""
        path = self.device_dir(serial) / "manifest.json"
        temporary = path.with_suffix(".tmp")
        temporary.write_text(json.dumps(manifest, ensure_ascii=False, indent=1, default=str), encoding="utf-8")
        os.replace(temporary, path)
        return path

    def seal_envelope(self, serial: str, sealed_at: str) -> None:
        """Mark the PIN envelope sealed, for hand-over with its device."""
        envelope = self._envelope_or_fail(serial)
        self._write_envelope(envelope, sealed_at=sealed_at)

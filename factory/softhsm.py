"""SoftHSM2, the software token that stands in for USB tokens and the CA HSM.

Its specifics live here only: a token is a directory under a token directory named by
a UUID whose last 16 hex digits are the token's serial; a ``softhsm2.conf`` points a
PKCS#11 client at a token directory; ``softhsm2-util`` initialises tokens (python-pkcs11
has no C_InitToken).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
from pathlib import Path

from factory.errors import ConfigurationError, TokenError


def write_config(path: Path, tokendir: Path) -> Path:
    """Write a softhsm2.conf using the file object store (the sqlite one degrades)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tokendir.mkdir(parents=True, exist_ok=True, mode=0o700)
    path.write_text(
        f"directories.tokendir = {tokendir}\n"
        "objectstore.backend = file\n"
        "log.level = ERROR\n"
        "slots.removable = false\n"
    )
    return path


def serial_of(token_dir_name: str) -> str:
    """The serial SoftHSM2 reports for a token directory named ``xxxxxxxx-xxxx-xxxx-ssss-ssssssssssss``."""
    parts = token_dir_name.split("-")
    return parts[3] + parts[4]


def token_directories(tokendir: Path) -> dict[str, str]:
    """Serial → directory name of every token in a token directory."""
    if not tokendir.is_dir():
        return {}
    return {serial_of(entry.name): entry.name for entry in tokendir.iterdir()
            if entry.is_dir() and entry.name.count("-") == 4}


def init_token(config: Path, label: str, so_pin: str, user_pin: str) -> None:
    """Initialise a new token in the first free slot of ``config``'s token directory.

    Only transport PINs (known, like a blank USB token's) pass through here: the
    subscriber's own PINs are set later over PKCS#11 and never reach a command line.
    """
    if shutil.which("softhsm2-util") is None:
        raise ConfigurationError("softhsm2-util not found: install Debian's softhsm2 package (make demo does)")
    result = subprocess.run(
        ["softhsm2-util", "--init-token", "--free", "--label", label, "--so-pin", so_pin, "--pin", user_pin],
        env={**os.environ, "SOFTHSM2_CONF": str(config)}, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise TokenError(f"softhsm2-util could not initialise token {label}: {result.stderr.strip()}")


def init_tokens(tokendir: Path, count: int, label: str, so_pin: str, user_pin: str) -> None:
    """Initialise ``count`` new tokens into ``tokendir``, side by side: most of
    ``softhsm2-util``'s time is waiting for the disk, so together they cost a fraction of
    one after another. Each runs in a folder of its own beside ``tokendir`` — one that
    lists the slots while a sibling's directory is half written gives up and leaves its
    own half-made directory behind — and each finished token is moved in whole, so a
    process reading ``tokendir`` meanwhile never meets a half-written one (two of those
    make SoftHSM2 abort on a duplicate slot id)."""
    if shutil.which("softhsm2-util") is None:
        raise ConfigurationError("softhsm2-util not found: install Debian's softhsm2 package (make demo does)")
    work = tokendir.parent / f".init-tokens-{os.getpid()}-{threading.get_ident()}"
    shutil.rmtree(work, ignore_errors=True)
    command = ["softhsm2-util", "--init-token", "--free", "--label", label, "--so-pin", so_pin, "--pin", user_pin]
    try:
        children = []
        for index in range(count):
            own = write_config(work / str(index) / "softhsm2.conf", work / str(index) / "tokens")
            children.append((own, subprocess.Popen(command, env={**os.environ, "SOFTHSM2_CONF": str(own)},
                                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)))
        for own, child in children:
            if child.wait() != 0:  # alone in its folder this should not happen: once more, reporting why
                shutil.rmtree(own.parent / "tokens")
                write_config(own, own.parent / "tokens")
                init_token(own, label, so_pin, user_pin)
            for entry in (own.parent / "tokens").iterdir():
                os.rename(entry, tokendir / entry.name)
    finally:
        shutil.rmtree(work, ignore_errors=True)

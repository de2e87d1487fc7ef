"""Fixtures that start real servers: a private redis-server, a PostgreSQL database
(the server CERTFACTORY_TEST_POSTGRES_URL names, or a private cluster), SoftHSM2 homes.
A server that cannot be had fails the test with how to get it, never skips it."""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy

from certfactory.embedded import RedisServer, free_port

ROOT = Path(__file__).resolve().parent.parent


def _require(binary: str, package: str) -> str:
    path = shutil.which(binary)
    if path is None:
        pytest.fail(f"{binary} not found: install Debian's {package} package (`make test` does, as root)")
    return path


@pytest.fixture(scope="session")
def tools() -> dict[str, str]:
    """The system tools the integration tests drive."""
    return {"redis-server": _require("redis-server", "redis-server"),
            "softhsm2-util": _require("softhsm2-util", "softhsm2"),
            "pkcs11-tool": _require("pkcs11-tool", "opensc"),
            "openssl": _require("openssl", "openssl")}


@pytest.fixture()
def redis_server(tmp_path: Path, tools: dict[str, str]) -> Iterator[RedisServer]:
    """A private redis-server on a free loopback port, AOF on."""
    server = RedisServer(tmp_path / "redis").start()
    yield server
    server.stop()


def _private_cluster(base: Path) -> Iterator[str]:
    binaries = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not binaries:
        pytest.fail("no PostgreSQL server: set CERTFACTORY_TEST_POSTGRES_URL, or install Debian's postgresql "
                    "package (`make test` does, as root) so the tests can start a private cluster")
    bindir = Path(binaries[-1]).parent
    data = base / "pgdata"
    base.mkdir(parents=True, exist_ok=True)
    runas: list[str] = []
    if os.geteuid() == 0:  # initdb refuses root
        shutil.chown(base, "postgres")
        runas = ["runuser", "-u", "postgres", "--"]
        pwd.getpwnam("postgres")
    port = free_port()
    subprocess.run([*runas, str(bindir / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres"],
                   check=True, capture_output=True)
    subprocess.run([*runas, str(bindir / "pg_ctl"), "-D", str(data), "-w", "-l", str(base / "pg.log"), "-o",
                    f"-p {port} -k {base} -c listen_addresses=127.0.0.1 -c fsync=off", "start"],
                   check=True, capture_output=True)
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run([*runas, str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
                       capture_output=True)


@pytest.fixture(scope="session")
def postgres_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """URL of a PostgreSQL server to create test databases on."""
    named = os.environ.get("CERTFACTORY_TEST_POSTGRES_URL")
    if named:
        yield named
        return
    yield from _private_cluster(Path("/tmp") / f"cf-pg-{uuid.uuid4().hex[:8]}")


@pytest.fixture()
def postgres_url(postgres_server: str) -> Iterator[str]:
    """A fresh, empty database on the PostgreSQL server, dropped afterwards."""
    name = f"cf_test_{uuid.uuid4().hex[:12]}"
    admin = sqlalchemy.create_engine(postgres_server, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            connection.exec_driver_sql(f'CREATE DATABASE "{name}"')
    except sqlalchemy.exc.OperationalError as error:
        pytest.fail(f"PostgreSQL at {postgres_server} cannot be reached ({error.orig}); start it, e.g. "
                    "`pg_ctlcluster 15 main start`, or unset CERTFACTORY_TEST_POSTGRES_URL to use a private cluster")
    url = postgres_server.rsplit("/", 1)[0] + f"/{name}"
    yield url
    for _ in range(20):
        try:
            with admin.connect() as connection:
                connection.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            break
        except sqlalchemy.exc.OperationalError:
            time.sleep(0.2)
    admin.dispose()


def certfactory_env(home: Path, **extra: str) -> dict[str, str]:
    """The environment of a certfactory child process using ``home``."""
    env = {key: value for key, value in os.environ.items()
           if not key.startswith("CERTFACTORY_") and key != "SOFTHSM2_CONF"}
    env.update({"CERTFACTORY_HOME": str(home), "CERTFACTORY_WORKER_PROCESSES": "2", **extra})
    return env


def run_cli(home: Path, *args: str, check: bool = True, timeout: float = 600, **extra: str
            ) -> subprocess.CompletedProcess[str]:
    """Run the certfactory command line as a user would."""
    result = subprocess.run([sys.executable, "-m", "certfactory.cli", *args], env=certfactory_env(home, **extra),
                            capture_output=True, text=True, timeout=timeout, cwd=home.parent)
    if check and result.returncode != 0:
        pytest.fail(f"certfactory {' '.join(args)} exited {result.returncode}:\n{result.stdout}\n{result.stderr}")
    return result

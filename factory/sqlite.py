"""How the ledger uses SQLite: WAL, writers queueing in turn, readers never waiting.

pysqlite's deferred BEGIN lets two writers both read then fail to upgrade their lock
with SQLITE_BUSY at once; BEGIN IMMEDIATE makes them queue on busy_timeout. Only
writers (``Ledger.transaction``) take it: a read takes a WAL snapshot and waits for
nobody, so stage reads do not queue behind other processes' commits. SQLite's busy
handler sleeps between tries (1, 2, 5 … 100 ms), so writers of several processes
queueing on BEGIN IMMEDIATE waited ~30 ms each in a load test for locks held about a
millisecond: a kernel lock taken first (``WriterTurns``) wakes the next writer at once.
"""

from __future__ import annotations

import fcntl
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, event
from sqlalchemy.engine import Connection

WRITER = "certfactory_writer"  # execution option of Ledger.transaction's connections


def immediate_transactions(engine: Engine) -> None:
    """WAL, NORMAL sync, a long busy timeout, foreign keys; BEGIN IMMEDIATE for writers."""

    @event.listens_for(engine, "connect")
    def _connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA busy_timeout=60000")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(connection: Connection) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE" if connection.get_execution_options().get(WRITER) else "BEGIN")


class WriterTurns:
    """Writers of every process take turns on an flock beside the database file (a
    no-op for other databases: PostgreSQL's writers wait on row locks, woken at once)."""

    def __init__(self, lock_path: Path | None) -> None:
        self.lock_path = lock_path
        self._local = threading.local()  # per thread: its lock file and how deep it is in turns

    @classmethod
    def for_engine(cls, engine: Engine) -> WriterTurns:
        """Turns for this engine's database (none unless it is an SQLite file)."""
        database = engine.url.database if engine.dialect.name == "sqlite" else None
        return cls(Path(f"{database}.writer-lock") if database and database != ":memory:" else None)

    @contextmanager
    def turn(self) -> Iterator[None]:
        """This thread's turn (a transaction opened inside one already holds it)."""
        local = self._local
        if self.lock_path is None or getattr(local, "depth", 0):
            local.depth = getattr(local, "depth", 0) + 1
            try:
                yield
            finally:
                local.depth -= 1
            return
        if getattr(local, "handle", None) is None or local.pid != os.getpid():  # a forked child opens its own
            local.handle, local.pid = open(self.lock_path, "a"), os.getpid()  # noqa: SIM115  kept open
        fcntl.flock(local.handle, fcntl.LOCK_EX)
        local.depth = 1
        try:
            yield
        finally:
            local.depth = 0
            fcntl.flock(local.handle, fcntl.LOCK_UN)

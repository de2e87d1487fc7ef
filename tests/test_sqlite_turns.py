"""Writers on an SQLite ledger take turns on a kernel lock (factory.sqlite.WriterTurns)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from sqlalchemy import create_engine

from factory.sqlite import WriterTurns


def test_a_second_writer_waits_for_the_first_and_a_nested_turn_does_not(tmp_path: Path) -> None:
    """Thread B's turn begins only after thread A's ends; A's nested turn passes at once."""
    turns = WriterTurns(tmp_path / "ledger.sqlite.writer-lock")
    order: list[str] = []
    a_inside, b_waiting = threading.Event(), threading.Event()

    def writer_a() -> None:
        with turns.turn():
            a_inside.set()
            with turns.turn():  # a transaction opened inside another: no deadlock
                b_waiting.wait(5)
                time.sleep(0.2)  # B is at its turn by now: without the lock it would be inside
                order.append("a still inside")
        order.append("a done")

    def writer_b() -> None:
        a_inside.wait(5)
        b_waiting.set()
        with turns.turn():
            order.append("b inside")

    threads = [threading.Thread(target=writer_a), threading.Thread(target=writer_b)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert order.index("b inside") > order.index("a still inside")


def test_only_an_sqlite_file_gets_turns(tmp_path: Path) -> None:
    """PostgreSQL and in-memory SQLite need none; a file's lock lies beside it."""
    assert WriterTurns.for_engine(create_engine("sqlite://")).lock_path is None
    assert WriterTurns.for_engine(create_engine("postgresql+psycopg://127.0.0.1/test")).lock_path is None
    lock_path = WriterTurns.for_engine(create_engine(f"sqlite:///{tmp_path}/l.sqlite")).lock_path
    assert lock_path == tmp_path / "l.sqlite.writer-lock"

"""index.json refreshed from what was published lately, never drifting from a whole
read of the ledger (factory.publication.IndexCache)."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import pytest

from factory import revocation
from factory.calendar import WorkingCalendar
from factory.issuance import Issuance, Pickup
from factory.ledger import Ledger
from factory.publication import IndexCache, Repository
from tests.softca import POLICY, SoftCA, file_batch, issue


@pytest.fixture()
def ledger(tmp_path: Path) -> Ledger:
    """An empty SQLite ledger."""
    return Ledger.connect(f"sqlite:///{tmp_path / 'ledger.sqlite'}")


def _serials(root: Path) -> list[str]:
    return [entry["serial"] for entry in json.loads((root / "index.json").read_text())["certificates"]]


def test_a_refresh_reads_the_last_minute_and_matches_a_whole_read(ledger: Ledger, tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """After the first refresh only the last minute's publications are read; the file
    lists what a whole read lists, in the same order, and a revoked certificate leaves it."""
    authority, root = SoftCA.create(), tmp_path / "repository"
    issuance = Issuance(ledger, policy=POLICY, repository=Repository(root), calendar=WorkingCalendar(),
                        pickup=Pickup("here", "9-17"))
    reads: list[Any] = []
    whole_read = ledger.index_entries
    monkeypatch.setattr(ledger, "index_entries", lambda since=None: reads.append(since) or whole_read(since))
    requests = file_batch(ledger, tmp_path, "BTC", 5, seed=11)
    serials = [issue(ledger, authority, request_id, publish=True) for request_id in requests[:3]]
    issuance.refresh_index()
    assert reads == [None] and _serials(root) == serials

    serials += [issue(ledger, authority, request_id, publish=True) for request_id in requests[3:]]
    issuance.refresh_index()
    assert len(reads) == 2 and isinstance(reads[1], dt.datetime)  # only lately: not a whole read
    assert _serials(root) == [entry["serial"] for entry in whole_read()] == serials
    assert json.loads((root / "index.json").read_text()) == json.loads(
        json.dumps({"certificates": whole_read()}, default=str))  # the same entries, field for field

    revocation.revoke(ledger, serials[1], "affiliationChanged", "operator:test", dt.datetime.now(dt.UTC), "moved")
    issuance.refresh_index()  # the count disagrees: one whole read
    assert reads[-1] is None and _serials(root) == serials[:1] + serials[2:]


def test_the_cache_forgets_serials_older_than_the_overlap_and_an_idle_refresh_writes_nothing(
        ledger: Ledger, tmp_path: Path) -> None:
    """Memory stays flat: only the last minute's serials are kept; with nothing published
    since, index.json is left as it is."""
    cache = IndexCache()
    start = dt.datetime(2026, 12, 2, 9, 0)
    cache.add([{"serial": f"s{n}", "published_at": start + dt.timedelta(seconds=10 * n)} for n in range(30)])
    assert cache.count == 30 and cache.latest == start + dt.timedelta(seconds=290)
    assert set(cache.recent) == {f"s{n}" for n in range(23, 30)}  # within a minute of the latest
    assert cache.fresh([{"serial": "s29"}, {"serial": "s30"}]) == [{"serial": "s30"}]

    authority, root = SoftCA.create(), tmp_path / "repository"
    issuance = Issuance(ledger, policy=POLICY, repository=Repository(root), calendar=WorkingCalendar(),
                        pickup=Pickup("here", "9-17"))
    issue(ledger, authority, file_batch(ledger, tmp_path, "BTC", 1, seed=5)[0], publish=True)
    issuance.refresh_index()
    written = (root / "index.json").stat().st_mtime_ns
    issuance.refresh_index()
    assert (root / "index.json").stat().st_mtime_ns == written

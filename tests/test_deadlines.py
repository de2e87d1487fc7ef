"""Where requests stand against their deadlines, as `status` and the metrics show it."""

from __future__ import annotations

import datetime as dt
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

from certfactory import operations
from factory.calendar import WorkingCalendar
from factory.deadlines import standings
from factory.ledger import Ledger
from schemas.status import StatusReport
from tests.conftest import certfactory_env, run_cli
from tests.test_monitoring import TODAY, _fill_ledger


def _ledger(home: Path) -> Ledger:
    home.mkdir(parents=True)
    ledger = Ledger.connect(f"sqlite:///{home / 'ledger.sqlite'}")
    _fill_ledger(ledger)
    return ledger


def test_standings_count_open_at_risk_breached_and_the_next_due_date(tmp_path: Path) -> None:
    ledger = _ledger(tmp_path / "var")
    ready, publish = standings(ledger, WorkingCalendar(), TODAY).values()
    # ready is owed by r1 (today), r2 (passed), r3 (+5 days); r7 has no deadline yet; r4 is packaged
    assert (ready.open, ready.at_risk, ready.breached, ready.next_due) == (3, 1, 1, TODAY)
    assert (publish.open, publish.at_risk, publish.breached) == (1, 1, 0)  # r5, due on the next working day
    only_b2 = standings(ledger, WorkingCalendar(), TODAY, batch_id="b2")
    assert only_b2["ready"].open == 0 and only_b2["ready"].next_due is None


def test_a_deadline_after_the_weekend_is_at_risk_on_friday(tmp_path: Path) -> None:
    """r3 is due on Sunday 2026-03-15 (counted as the Monday): on Thursday it is not yet at
    risk; on Friday it is, though a naive 'today or tomorrow' would miss it."""
    ledger = _ledger(tmp_path / "var")
    thursday = standings(ledger, WorkingCalendar(), dt.date(2026, 3, 12))["ready"]
    friday = standings(ledger, WorkingCalendar(), dt.date(2026, 3, 13))["ready"]
    assert (thursday.at_risk, thursday.breached) == (0, 2)
    assert (friday.at_risk, friday.breached, friday.next_due) == (1, 2, dt.date(2026, 3, 15))


def test_status_json_shows_deadlines_and_matches_its_schema(tmp_path: Path) -> None:
    ledger = _ledger(tmp_path / "var")
    report = operations.status(ledger, None, today=TODAY)
    StatusReport.model_validate(report)
    assert report["deadlines"]["ready"] == {"open": 3, "at_risk": 1, "breached": 1, "next_due": TODAY.isoformat()}
    shown = json.loads(run_cli(tmp_path / "var", "status", "--json").stdout)
    StatusReport.model_validate(shown)
    assert set(shown["deadlines"]) == {"ready", "publish"}
    text = run_cli(tmp_path / "var", "status").stdout
    assert "ready (3 working days): 3 open" in text


def test_status_of_one_request_shows_its_deadlines_and_trail(tmp_path: Path) -> None:
    _ledger(tmp_path / "var")
    shown = json.loads(run_cli(tmp_path / "var", "status", "--request", "r5", "--json").stdout)
    assert shown["state"] == "activated"
    assert shown["deadlines"] == {"ready": (TODAY - dt.timedelta(days=2)).isoformat(),
                                  "publish": (TODAY + dt.timedelta(days=1)).isoformat()}
    missing = run_cli(tmp_path / "var", "status", "--request", "nope", check=False)
    assert missing.returncode != 0 and "no request 'nope'" in missing.stderr and "Traceback" not in missing.stderr


def test_status_watch_redraws_until_ctrl_c(tmp_path: Path) -> None:
    """The live view draws states and deadlines, and Ctrl-C ends it cleanly."""
    _ledger(tmp_path / "var")
    # Ctrl-C ends the view from the first read on; before that Python is still importing
    # (a fresh checkout compiles its bytecode first): compile it here, then allow the start-up.
    subprocess.run([sys.executable, "-c", "import certfactory.cli"], check=True)
    child = subprocess.Popen([sys.executable, "-m", "certfactory.cli", "status", "--watch", "--interval", "0.2"],
                             env={**certfactory_env(tmp_path / "var"), "COLUMNS": "120"}, cwd=tmp_path,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             # a background job of a shell (nohup, `make test &`) ignores SIGINT; a terminal does not
                             preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    time.sleep(5)
    child.send_signal(signal.SIGINT)
    out, err = child.communicate(timeout=30)
    assert child.returncode == 0, err
    assert "awaiting_activation" in out and "ready (3 working days)" in out and "Traceback" not in err

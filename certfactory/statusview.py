"""How `certfactory status` looks on a terminal: plain text, or a live view with --watch."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table

from schemas.status import RequestState

DEADLINE_NAMES = {"ready": "ready (3 working days)", "publish": "publish (1 working day)"}


def status_text(report: dict[str, Any]) -> str:
    """The plain report: states, deadlines, failures, dead letters."""
    lines = [f"{state:>20}  {count}" for state, count in report["states"].items()]
    lines.append(f"{'total':>20}  {report['total']}")
    lines.append("deadlines:")
    for name, standing in report["deadlines"].items():
        lines.append(f"  {DEADLINE_NAMES[name]}: {standing['open']} open, {standing['at_risk']} at risk, "
                     f"{standing['breached']} breached, next due {standing['next_due'] or '-'}")
    for failed in report["failed"]:
        lines.append(f"failed {failed['request_id']} ({failed['request_ref']}): {failed['reason']}")
    if report.get("dead_letters") is not None:
        lines.append("dead letters: " + (", ".join(f"{q}={n}" for q, n in report["dead_letters"].items() if n)
                                         or "none"))
    for dead in report.get("dead_letter_messages", []):
        lines.append(f"dead letter {dead['queue']}: {dead['actor']}({dead['request_id'] or ''}) at {dead['dead_at']}")
    return "\n".join(lines)


def request_text(detail: dict[str, Any]) -> str:
    """One request, then its audit trail."""
    lines = [f"request {detail['request_id']} ({detail['agency_code']}/{detail['request_ref']}), "
             f"batch {detail['batch_id']}: {detail['state']}"]
    if detail["reason"]:
        lines.append(f"  reason: {detail['reason']} [{detail['reason_code']}]")
    lines.append(f"  deadlines: ready {detail['deadlines']['ready'] or '-'}, publish {detail['deadlines']['publish'] or '-'}")
    lines.append(f"  device {detail['device_serial'] or '-'}, certificate {detail['certificate_serial'] or '-'}, "
                 f"effective {detail['effective_at'] or '-'}")
    lines.extend(f"  {event['at']}  {event['kind']}"
                 + (f" {event['from'] or ''}→{event['to']}" if event["to"] else "") for event in detail["events"])
    return "\n".join(lines)


def status_view(report: dict[str, Any]) -> Group:
    """The live view: a bar per state against the total, deadlines, failures."""
    total = max(report["total"], 1)
    states = Table(title=f"batch {report['batch_id']}" if report["batch_id"] else "all batches", box=None)
    states.add_column("state")
    states.add_column("requests", justify="right")
    states.add_column("", width=40)
    for state, count in report["states"].items():
        style = "red" if state in (RequestState.failed, RequestState.rejected) else "green"
        states.add_row(state, str(count), ProgressBar(total=total, completed=count, width=40, complete_style=style))
    deadlines = Table(box=None)
    for column in ("deadline", "open", "at risk", "breached", "next due"):
        deadlines.add_column(column)
    for name, standing in report["deadlines"].items():
        deadlines.add_row(DEADLINE_NAMES[name], str(standing["open"]),
                          f"[yellow]{standing['at_risk']}[/]" if standing["at_risk"] else "0",
                          f"[red]{standing['breached']}[/]" if standing["breached"] else "0",
                          standing["next_due"] or "-")
    parts: list[Any] = [states, deadlines]
    dead = report.get("dead_letters")
    parts.append("dead letters: " + ("broker unreachable" if dead is None else
                                     ", ".join(f"{q}={n}" for q, n in dead.items() if n) or "none"))
    parts.extend(f"[red]failed[/] {f['request_id']} ({f['request_ref']}): {f['reason']}" for f in report["failed"])
    return Group(*parts)


def watch(read: Callable[[], dict[str, Any]], interval: float) -> None:
    """Redraws ``read()`` every ``interval`` seconds until Ctrl-C."""
    try:  # Ctrl-C is how the user ends it, even before the first view is drawn
        with Live(status_view(read()), console=Console(), auto_refresh=False) as live:
            while True:
                time.sleep(interval)
                live.update(status_view(read()), refresh=True)
    except KeyboardInterrupt:
        pass

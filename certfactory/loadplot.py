"""`certfactory loadtest --plot`: one PNG with throughput over time, latency per stage
and RSS over time, drawn from the report alone (so an old JSON can be drawn again)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from factory.errors import ConfigurationError


def plot(report: dict[str, Any], path: Path) -> Path:
    """Draw ``report`` (what ``run_loadtest`` returns) to ``path`` (PNG)."""
    try:
        import matplotlib

        matplotlib.use("Agg")  # no display: draw to a file
        import matplotlib.pyplot as plt
    except ImportError:
        raise ConfigurationError("--plot needs matplotlib: pip install 'certfactory[plot]'") from None
    figure, (rate_axes, stage_axes, memory_axes) = plt.subplots(3, 1, figsize=(10, 12))
    figure.suptitle(f"certfactory load test: {report['count']} × {report['key_type']}, "
                    f"{report['processes']} station processes — efficiency {report['efficiency']} "
                    f"({report['end_to_end_per_second']}/s of a {report['ceiling_per_second']}/s ceiling)")

    series = report["throughput"]
    for state in ("key_generated", "signed", "published"):
        values = series[state]
        rate_axes.step([i * series["bin_seconds"] for i in range(len(values))], values, where="post", label=state)
    rate_axes.axhline(report["ceiling_per_second"], color="grey", linestyle="--", label="ceiling")
    rate_axes.set(title="throughput", xlabel="seconds since submission", ylabel="requests / s")
    rate_axes.legend()

    names = [name for name in report["stages"] if name != "end_to_end"]
    positions = range(len(names))
    width = 0.27
    for offset, (key, label) in enumerate((("between_transitions_ms", "between transitions"),
                                           ("queue_wait_ms", "queue wait"), ("work_ms", "work"))):
        p50 = [report["stages"][n].get(key, {}).get("p50", 0) or 0 for n in names]
        p95 = [report["stages"][n].get(key, {}).get("p95", 0) or 0 for n in names]
        xs = [p + (offset - 1) * width for p in positions]
        stage_axes.bar(xs, p50, width, label=f"{label} p50")
        stage_axes.scatter(xs, p95, marker="_", s=200, color="black")
    stage_axes.set_xticks(list(positions), names, rotation=15)
    stage_axes.set_yscale("symlog", linthresh=10)
    stage_axes.set(title="latency per stage (bars p50, ticks p95)", ylabel="ms")
    stage_axes.legend()

    for label, points in report.get("memory", {}).get("rss_mb_over_time", {}).items():
        if points:
            memory_axes.plot([p[0] for p in points], [p[1] for p in points], label=label)
    memory_axes.set(title="resident memory per worker process", xlabel="seconds since submission", ylabel="MB")
    memory_axes.set_ylim(bottom=0)
    memory_axes.legend(fontsize="small", ncol=2)

    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=90)
    plt.close(figure)
    return path

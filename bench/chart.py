"""The scaling chart of docs/benchmarks.md: ids archived per second by worker
processes, with the naive loop and dlt measured in the same run as lines."""

from __future__ import annotations

from pathlib import Path

from bench.harness import Result


def scaling_chart(results: list[Result], path: Path) -> Path | None:
    """Draw the throughput figures to `path` (PNG); None when they were not run."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on a server or in CI
    import matplotlib.pyplot as plt

    ours = [
        (int(r.figure.split(", ")[1].split()[0]), r.value)
        for r in results
        if r.scenario == "throughput" and r.figure.startswith("mentionsync, ") and r.unit == "ids/s"
    ]
    baselines = {
        r.figure.split(" (")[0]: r.value
        for r in results
        if r.scenario == "throughput" and r.figure.startswith(("naive", "dlt"))
    }
    if not ours:
        return None
    ours.sort()
    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=120)
    xs = [p for p, _ in ours]
    ax.plot(xs, [v for _, v in ours], marker="o", linewidth=2, label="mentionsync")
    for p, v in ours:
        ax.annotate(f"{v:,.0f}", (p, v), textcoords="offset points", xytext=(0, 8), ha="center")
    styles = {"naive loop": ":", "dlt pipeline": "--"}
    for label, value in baselines.items():
        ax.axhline(
            value, linestyle=styles.get(label, "-."), color="grey", label=f"{label} ({value:,.0f})"
        )
    ax.set_xticks(xs)
    ax.set_xlabel("celery worker processes (--concurrency)")
    ax.set_ylabel("ids archived per second")
    ax.set_ylim(bottom=0)
    ax.set_title("End-to-end throughput, simulator without latency or rate limit")
    ax.grid(True, alpha=0.3)
    ax.legend(loc="center right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path

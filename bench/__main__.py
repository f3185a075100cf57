"""`python -m bench [--scenario NAME] [--smoke]`: run scenarios, print one table.

Without --scenario, the issue's six scenarios run; the extra one, reports,
runs only when named: `python -m bench --scenario reports`.

Exit status: 0 when every scenario ran (targets met or not: the table says),
1 when a scenario crashed.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from bench import latency, memory, ratelimit, reports, scheduler, throughput, writepath
from bench.chart import scaling_chart
from bench.harness import ROOT, Result, console, print_table

# In the order of the scenarios 1-6.
SCENARIOS: dict[str, Callable[[bool], list[Result]]] = {
    "throughput": throughput.run,
    "latency": latency.run,
    "ratelimit": ratelimit.run,
    "scheduler": scheduler.run,
    "writepath": writepath.run,
    "memory": memory.run,
    # Extra: the analytics figures of docs/analytics.md.
    "reports": reports.run,
}
# Not in the default run, which must stay within 15 minutes: named with --scenario only.
EXTRA = frozenset({"reports"})


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument(
        "--scenario",
        choices=sorted(SCENARIOS),
        action="append",
        help=f"scenario to run (repeatable; default: all but {', '.join(sorted(EXTRA))})",
    )
    parser.add_argument(
        "--chart",
        type=Path,
        default=None,
        help="PNG of the throughput scaling figures (default: docs/benchmarks-scaling.png "
        "on a full run, none on a smoke run)",
    )
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="a tiny run that only checks the scenarios work; timings mean nothing",
    )
    args = parser.parse_args(argv)
    names: list[str] = args.scenario or [name for name in SCENARIOS if name not in EXTRA]
    results: list[Result] = []
    for name in names:
        try:
            results += SCENARIOS[name](args.smoke)
        except Exception:
            console.print_exception()
            console.print(f"[red]scenario {name} crashed[/]")
            if results:
                print_table("mentionsync benchmarks (partial)", results)
            return 1
    title = "mentionsync benchmarks" + (
        " (smoke: timings are not meaningful)" if args.smoke else ""
    )
    print_table(title, results)
    chart = args.chart or (None if args.smoke else ROOT / "docs" / "benchmarks-scaling.png")
    if chart is not None and scaling_chart(results, chart) is not None:
        console.print(f"chart: {chart}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""`python -m bench [--scenario NAME] [--smoke]`: run scenarios, print one table.

Without --scenario, the six scenarios of issue 4 and the two of issue 13 (pace,
backfill) run; the extra one, reports, runs only when named:
`python -m bench --scenario reports`. `--ids` and `--max-seconds` scale pace and
backfill (e.g. `--scenario backfill --ids 2000 --max-seconds 60`).

Exit status: 0 when every scenario ran (targets met or not: the table says),
1 when a scenario crashed.
"""

from __future__ import annotations

import argparse
import functools
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from bench import (
    backfill,
    latency,
    memory,
    pace,
    ratelimit,
    reports,
    scheduler,
    throughput,
    writepath,
)
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
    # Issue 13: at a real vendor's pace, with the defaults.
    "pace": pace.run,
    "backfill": backfill.run,
    # Extra: the analytics figures of docs/analytics.md.
    "reports": reports.run,
}
# Not in the default run: named with --scenario only.
EXTRA = frozenset({"reports"})
# Scenarios whose size --ids and --max-seconds set.
SCALABLE = frozenset({"pace", "backfill"})


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
    parser.add_argument(
        "--ids",
        type=int,
        default=None,
        help="ids of pace and backfill, split 5:1 between the vendors "
        "(default: 36,000 and 100,000; smoke 120)",
    )
    parser.add_argument(
        "--max-seconds",
        type=float,
        default=None,
        help="pace and backfill stop and measure what they did after this long "
        "(default: 300 and 600)",
    )
    args = parser.parse_args(argv)
    if args.ids is not None and args.ids < 2:
        parser.error("--ids: at least 2 (one id of each vendor)")
    names: list[str] = args.scenario or [name for name in SCENARIOS if name not in EXTRA]
    results: list[Result] = []
    for name in names:
        scenario: Callable[..., list[Result]] = SCENARIOS[name]
        if name in SCALABLE:
            scenario = functools.partial(scenario, ids=args.ids, max_seconds=args.max_seconds)
        try:
            results += scenario(args.smoke)
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

"""`python -m bench [--scenario NAME] [--smoke]`: run scenarios, print one table.

Exit status: 0 when every scenario ran (targets met or not: the table says),
1 when a scenario crashed.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from bench import ratelimit, scheduler, writepath
from bench.harness import Result, console, print_table

SCENARIOS: dict[str, Callable[[bool], list[Result]]] = {
    "ratelimit": ratelimit.run,
    "scheduler": scheduler.run,
    "writepath": writepath.run,
}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument(
        "--scenario",
        choices=sorted(SCENARIOS),
        action="append",
        help="scenario to run (repeatable; default: all)",
    )
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="a tiny run that only checks the scenarios work; timings mean nothing",
    )
    args = parser.parse_args(argv)
    names: list[str] = args.scenario or sorted(SCENARIOS)
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
    return 0


if __name__ == "__main__":
    sys.exit(main())

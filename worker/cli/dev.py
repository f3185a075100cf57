"""`mentionsync simulate`, `demo` and `bench`: the simulator, the demo, the benchmarks."""

from __future__ import annotations

import sys
from pathlib import Path

import click
from rich.markup import escape

from worker.cli._common import EXIT_REJECTED, err


@click.command()
@click.option("--port", type=int, default=8800, show_default=True)
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--latency-ms", type=float, default=0.0, show_default=True)
@click.option("--error-rate", type=float, default=0.0, show_default=True)
@click.option("--rate-limit", type=float, default=None, help="Requests/s per key (default: none).")
@click.option("--max-pending-polls", type=int, default=2, show_default=True)
def simulate(
    port: int,
    host: str,
    seed: int,
    latency_ms: float,
    error_rate: float,
    rate_limit: float | None,
    max_pending_polls: int,
) -> None:
    """Serve a simulator of both vendor APIs on loopback (for tests and demos)."""
    from simulator import SimConfig, serve

    config = SimConfig(
        seed=seed,
        latency_ms=latency_ms,
        error_rate=error_rate,
        rate_limit=rate_limit,
        max_pending_polls=max_pending_polls,
    )
    err.print(
        f"simulating MentionsAPI and MentionLab on http://{host}:{port} (seed {seed})",
        markup=False,
    )
    serve(config, host=host, port=port)


@click.command()
@click.option(
    "--dir",
    "directory",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("mentionsync-demo"),
    show_default=True,
)
@click.option("--asks", type=int, default=200, show_default=True)
@click.option("--executions", type=int, default=200, show_default=True)
@click.option("--timeout", type=float, default=300.0, show_default=True)
@click.option("--serve", is_flag=True, help="Then serve the archive's dashboard until Ctrl-C.")
@click.option("--port", type=int, default=8000, show_default=True, help="The dashboard's port.")
def demo(
    directory: Path, asks: int, executions: int, timeout: float, serve: bool, port: int
) -> None:
    """Simulator + real Celery worker and beat on SQLite: no server, no key needed."""
    from worker.demo import run_demo

    sys.exit(
        run_demo(
            directory, asks=asks, executions=executions, timeout=timeout, serve=serve, port=port
        )
    )


@click.command(
    context_settings={"ignore_unknown_options": True, "help_option_names": []},
    add_help_option=False,
)
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def bench(args: tuple[str, ...]) -> None:
    """Run the benchmarks (same as `python -m bench`; `mentionsync bench --help`)."""
    try:
        from bench.__main__ import main as bench_main
    except ImportError as exc:
        err.print(
            f"[red]mentionsync bench needs a source checkout with the bench extra[/] "
            f"(pip install -e '.\\[bench]'): {escape(str(exc))}"
        )
        sys.exit(EXIT_REJECTED)
    sys.exit(bench_main(list(args)))

"""What every command module shares: the consoles, the exit codes, the group class."""

from __future__ import annotations

import os
from typing import Any

import click
from rich.console import Console

from worker.common import EXIT_BLOCKED, EXIT_OK, EXIT_TIMEOUT

__all__ = ["EXIT_BLOCKED", "EXIT_OK", "EXIT_REJECTED", "EXIT_TIMEOUT", "err", "out"]

err = Console(stderr=True)
out = Console()

EXIT_REJECTED = 1  # track: some lines were rejected (the good ones are registered)


class _Commands(click.Group):
    """Every command ends with a one-line error, never a traceback (unless
    LOG_LEVEL=DEBUG asks for one): bad input gets a clear message."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.ClickException, click.Abort, SystemExit):
            raise
        except KeyboardInterrupt:
            raise click.Abort() from None
        except Exception as exc:
            # The settings the group built (--log-level wins), else the environment.
            level = getattr(ctx.obj, "log_level", None) or os.environ.get("LOG_LEVEL", "")
            if level.upper() == "DEBUG":
                raise
            first = str(exc).strip().splitlines()
            detail = first[0][:500] if first else ""
            raise click.ClickException(f"{type(exc).__name__}: {detail}") from None

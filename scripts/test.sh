#!/usr/bin/env bash
# The one command that sets up and runs the tests on a fresh machine:
# virtualenv + install, PostgreSQL and Redis up, lint, types, layering, then pytest.
# Extra arguments go to pytest (e.g. scripts/test.sh -k sync -x).
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh
scripts/services.sh
.venv/bin/ruff check --quiet .
.venv/bin/ruff format --check --quiet .
.venv/bin/mypy                     # strict on worker/ and models/ (pyproject.toml)
.venv/bin/lint-imports --no-cache  # layering and no import cycles (pyproject.toml)
# Two test processes (each with its own database and Redis database: tests/conftest.py),
# one file each at a time: most tests wait on real processes, not on the CPU.
exec .venv/bin/pytest -n "${TEST_PROCESSES:-2}" --dist loadfile "$@"

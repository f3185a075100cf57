#!/usr/bin/env bash
# The one command that sets up and runs the demo: no server and no API key needed.
# It ends by serving the demo archive's dashboard on http://127.0.0.1:8000/ until
# Ctrl-C. Extra arguments go to `mentionsync demo` (e.g. scripts/demo.sh --asks 500).
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh
exec .venv/bin/mentionsync demo --serve "$@"

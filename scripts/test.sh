#!/usr/bin/env bash
# The test command: set up (or reuse) .venv, then run the whole suite, slow end-to-end tests included.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export HF_HUB_OFFLINE=1 HF_HUB_DISABLE_TELEMETRY=1
exec "${HF_AGENTS_VENV:-.venv}/bin/python" -m pytest -q "$@"

#!/usr/bin/env bash
# Create or reuse .venv-sample-factory: Sample Factory 2 and its ViZDoom examples, the benchmark's peer
# (`python scripts/benchmark.py --sections sample_factory`). A separate environment because its pins clash with
# ours (numpy < 2, gymnasium < 1). Idempotent; not needed by anything else.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${SAMPLE_FACTORY_VENV:-.venv-sample-factory}
PY=${PYTHON:-python3}
stamp="$VENV/.installed"
[ -f "$stamp" ] && exit 0
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip >/dev/null
if ! command -v nvidia-smi >/dev/null 2>&1; then
  "$VENV/bin/python" -m pip install -q "torch==2.14.1"  # the CPU build that installs offline here
fi
"$VENV/bin/python" -m pip install -q "sample-factory[vizdoom]==2.1.1" "numpy<2" "gymnasium<1" "vizdoom<2"
touch "$stamp"

#!/usr/bin/env bash
# Create or reuse .venv ($HF_AGENTS_VENV) and install hf-agents with its dev and docs extras. Idempotent.
# On a machine without CUDA, first install a torch/torchvision pair that import together (torch 2.14.1 and
# torchvision 0.29.1; a torchvision built for another torch fails at import, and timm needs it).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${HF_AGENTS_VENV:-.venv}
PY=${PYTHON:-python3}
stamp="$VENV/.hf-agents-installed"
# The labelling app's browser test drives Debian's Chromium (Playwright's own browser download is not used).
if ! command -v chromium >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  apt-get install -y -q chromium >/dev/null 2>&1 || { apt-get update -q >/dev/null && apt-get install -y -q chromium >/dev/null; }
fi
if [ -f "$stamp" ] && [ "$stamp" -nt pyproject.toml ]; then
  exit 0  # already set up and pyproject unchanged
fi
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip >/dev/null
if ! command -v nvidia-smi >/dev/null 2>&1; then
  "$VENV/bin/python" -m pip install -q "torch==2.14.1" "torchvision==0.29.1"
fi
"$VENV/bin/python" -m pip install -q -e ".[dev,docs]"
touch "$stamp"

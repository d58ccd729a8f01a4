#!/usr/bin/env bash
# Create the project virtualenv and install everything make demo / make test need.
# torch 2.14.1 + torchvision 0.29.1: the matching pair transformers' InternVL processor needs
# (PyPI's torchvision does not load beside the CPU-only torch wheel; see README "Set-up notes").
set -euo pipefail
PY="${1:-python3}"
VENV="${2:-.venv}"
if [ ! -x "$VENV/bin/python" ]; then
  "$PY" -m venv "$VENV"
fi
"$VENV/bin/pip" install -q --upgrade pip
"$VENV/bin/pip" install -q "torch==2.14.1" "torchvision==0.29.1"
"$VENV/bin/pip" install -q -e ".[test,distributed]"

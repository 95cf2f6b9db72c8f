#!/usr/bin/env bash
# The README's main command: install what is needed (idempotent), then train the tiny presets on
# the built-in datasets and write images, logs and a loss plot to demo-output/ (or --out DIR).
# About 14 minutes on 2 idle CPU cores (it prints its own forecast). Usage: bash scripts/demo.sh [--out DIR] [--fast]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
exec cocogan demo "$@"

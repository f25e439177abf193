#!/usr/bin/env bash
# The main job, from a fresh clone: set up, then multiply the shipped sample originals (no weights needed).
# Extra arguments go to the command, e.g. --random 2 --seed 7.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
.venv/bin/python atelier_cli.py multiply samples/originals --output output "$@"

#!/usr/bin/env bash
# Make .venv with the pack's requirements and torch (pinned by constraints.txt); --test adds the test tools
# and comfy-cli (in .venv-tools, apart: it has many dependencies of its own).
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$python" -m venv .venv
pip=(.venv/bin/python -m pip install -q --disable-pip-version-check -c constraints.txt)
.venv/bin/python -c 'import torch' 2>/dev/null || "${pip[@]}" torch
"${pip[@]}" -r requirements.txt
if [ "${1:-}" = "--test" ]; then
  "${pip[@]}" -r requirements-test.txt
  [ -x .venv-tools/bin/comfy ] || { "$python" -m venv .venv-tools && .venv-tools/bin/python -m pip install -q \
    --disable-pip-version-check comfy-cli; }
fi

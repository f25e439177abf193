#!/usr/bin/env bash
# The tests, from a fresh clone: set up, lint, validate the pack as the Comfy Registry does, run pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh --test
.venv/bin/python -m ruff check .
# the registry's checks: pyproject metadata and the eval/exec scan; any warning fails the run here
validate=$(DO_NOT_TRACK=1 .venv-tools/bin/comfy --skip-prompt --no-json node validate 2>&1 </dev/null)
echo "$validate"
if echo "$validate" | grep -qiE 'warning|error'; then echo "comfy node validate warned" >&2; exit 1; fi
rm -rf .ruff_cache
# rootdir is tests/: the checkout itself is a package (ComfyUI imports it), and pytest would import its
# __init__.py under the folder's name, which fails when that name is no identifier (comfyui-atelier)
.venv/bin/python -m pytest --rootdir=tests -c pyproject.toml tests "$@"

#!/usr/bin/env bash
# Make (or refresh) the virtual environment for building the book and running the tests.
# Idempotent: does nothing when the requirements have not changed since the last run.
# Usage: tools/setup_env.sh VENV_DIR
set -euo pipefail
venv=${1:?usage: tools/setup_env.sh VENV_DIR}
here=$(cd "$(dirname "$0")/.." && pwd)
stamp=$(cat "$here/requirements.txt" "$here/requirements-dev.txt" "$here/pyproject.toml" | sha256sum | cut -c1-16)
if [[ -f $venv/.installed && $(cat "$venv/.installed") == "$stamp" ]]; then
  "$venv/bin/python" -m pip install -q --no-deps -e "$here"   # cnnlib itself, from this checkout
  exit 0
fi
python3 -m venv "$venv"
"$venv/bin/python" -m pip install -q --upgrade pip
"$venv/bin/python" -m pip install -q -r "$here/requirements-dev.txt"
# d2l is the peer the benchmarks compare with; its own pins break modern Python, so no deps.
"$venv/bin/python" -m pip install -q --no-deps d2l==1.0.3
"$venv/bin/python" -m pip install -q --no-deps -e "$here"
echo "$stamp" >"$venv/.installed"

#!/usr/bin/env bash
# Make (or refresh) the virtual environment for building the book and running the tests.
# Idempotent: does nothing when the requirements have not changed since the last run.
# Usage: tools/setup_env.sh VENV_DIR        (relative to the current folder, or absolute)
# Needs python3 3.10 or newer with its venv module working (Debian/Ubuntu: the python3-venv
# package). On a machine without an NVIDIA GPU, TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
# installs the CPU-only torch wheels (about 1 GB instead of 6 GB with the CUDA libraries).
set -euo pipefail
venv=${1:?usage: tools/setup_env.sh VENV_DIR}
[[ $venv == /* ]] || venv=$PWD/$venv      # install_cnnlib runs python from /; a link stays a link
here=$(cd "$(dirname "$0")/.." && pwd)
stamp=$(cat "$here/requirements.txt" "$here/requirements-dev.txt" "$here/pyproject.toml" | sha256sum | cut -c1-16)
pip=("$venv/bin/python" -m pip install -q --disable-pip-version-check)
# cnnlib itself, editable from this checkout; skipped when the venv already imports it from here
# (setuptools' editable install prints a warning and leaves build/ behind each time).
install_cnnlib() {
  local at log
  at=$(cd / && env -u PYTHONPATH "$venv/bin/python" -c \
       "import importlib.util as u; s = u.find_spec('cnnlib'); print(s.origin if s else '')")
  [[ $at == "$here/cnnlib/__init__.py" ]] && return 0
  if ! log=$("${pip[@]}" --no-deps --no-build-isolation -e "$here" 2>&1); then
    echo "$log" >&2
    return 1
  fi
}
# Before a 6 GB install: a python3 that is new enough and can make a virtual environment.
check_python() {
  local version has_ensurepip
  if ! command -v python3 >/dev/null; then
    echo "setup: no python3 on PATH; install Python 3.10 or newer (Debian/Ubuntu: apt install python3 python3-venv)" >&2
    return 1
  fi
  read -r version has_ensurepip < <(python3 -c \
    'import sys, importlib.util as u; print("%d.%d" % sys.version_info[:2], int(u.find_spec("ensurepip") is not None))')
  if [[ $(printf '%s\n' 3.10 "$version" | sort -V | head -n1) != 3.10 ]]; then
    echo "setup: python3 is Python $version; the course needs 3.10 or newer" >&2
    return 1
  fi
  if [[ $has_ensurepip != 1 ]]; then
    echo "setup: 'python3 -m venv' cannot make an environment here (Python $version has no ensurepip);" \
         "on Debian/Ubuntu install the python3-venv package: sudo apt install python3-venv" >&2
    return 1
  fi
}
if [[ -f $venv/.installed && $(cat "$venv/.installed") == "$stamp" ]]; then
  install_cnnlib
  exit 0
fi
check_python
python3 -m venv "$venv"
"${pip[@]}" --upgrade pip
if [[ -n ${TORCH_INDEX_URL:-} ]]; then        # e.g. the CPU-only wheels; not the default
  "${pip[@]}" --index-url "$TORCH_INDEX_URL" torch torchvision
fi
"${pip[@]}" -r "$here/requirements-dev.txt"
# d2l is the peer the benchmarks compare with; its own pins break modern Python, so no deps.
"${pip[@]}" --no-deps d2l==1.0.3
install_cnnlib
echo "$stamp" >"$venv/.installed"

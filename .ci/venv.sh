#!/usr/bin/env bash
# Usage: .ci/venv.sh NAME REQUIREMENTS_FILE...
# Prints the path of a Python virtualenv named NAME with the pinned requirements installed.
# The venv lives in .cache/venvs/NAME and is rebuilt only when the requirement files change
# (their SHA-256 is kept beside it); pip's download cache is .cache/pip, so a second run
# downloads nothing. Exits 3 without printing a path when there is no python3 (callers then
# report `SKIPPED: <suite>`, or fail when TOLLGATE_TEST_REQUIRE_SERVICES=1).
set -euo pipefail
cd "$(dirname "$0")/.."
name="$1"; shift
python="${PYTHON:-python3}"
if ! command -v "$python" >/dev/null 2>&1 || ! "$python" -c 'import venv, ensurepip' >/dev/null 2>&1; then
  echo "[venv] no usable $python (with venv and ensurepip)" >&2
  exit 3
fi
root="$PWD/.cache/venvs/$name"
want=$(cat "$@" | sha256sum | cut -d' ' -f1)
if [ ! -x "$root/bin/python" ] || [ "$(cat "$root/.requirements.sha256" 2>/dev/null)" != "$want" ]; then
  echo "[venv] building $root from $*" >&2
  rm -rf "$root"
  "$python" -m venv "$root" >&2
  export PIP_CACHE_DIR="$PWD/.cache/pip"
  "$root/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip >&2
  for req in "$@"; do
    "$root/bin/python" -m pip install --quiet --disable-pip-version-check -r "$req" >&2
  done
  echo "$want" > "$root/.requirements.sha256"
fi
echo "$root"

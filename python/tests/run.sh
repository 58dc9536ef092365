#!/usr/bin/env bash
# The Python suite: builds the `tollgate` wheel through its PEP 517 backend (maturin, the
# path `pip install ./python` takes, with the dev profile to reuse the workspace's debug
# build), installs it into a cached venv (.cache/venvs/python, pinned requirements), builds
# the `tollgate` binary the tests start as authority and sidecars and `llm-upstream` (the
# OpenAI and Anthropic wire formats the real SDKs talk to), and runs pytest.
# Without python3 it prints `SKIPPED: python`, unless TOLLGATE_TEST_REQUIRE_SERVICES=1 (CI),
# where that is a failure.
set -euo pipefail
cd "$(dirname "$0")/../.."
root="$PWD"

skip() {
  if [ "${TOLLGATE_TEST_REQUIRE_SERVICES:-}" = "1" ]; then
    echo "python suite: $1, and TOLLGATE_TEST_REQUIRE_SERVICES=1" >&2
    exit 1
  fi
  echo "SKIPPED: python ($1)"
  exit 0
}

venv=$(bash .ci/venv.sh python python/tests/requirements.txt) || {
  [ $? -eq 3 ] && skip "no usable python3 with venv"
  exit 1
}

echo "[python] cargo build --bin tollgate --bin llm-upstream" >&2
cargo build --quiet --bin tollgate
cargo build --quiet -p llm-upstream --bin llm-upstream

# The PEP 517 backend runs the `maturin` executable: the venv's.
export PATH="$venv/bin:$PATH"
echo "[python] building the wheel (maturin, PEP 517, dev profile)" >&2
wheels="$root/.cache/python-wheels"
rm -rf "$wheels"
MATURIN_PEP517_ARGS="--profile dev" "$venv/bin/python" -m pip wheel --quiet --no-deps \
  --no-build-isolation --disable-pip-version-check --wheel-dir "$wheels" ./python
"$venv/bin/python" -m pip install --quiet --no-deps --force-reinstall \
  --disable-pip-version-check "$wheels"/tollgate-*.whl

echo "[python] pytest" >&2
cd python/tests
exec "$venv/bin/python" -m pytest -p no:cacheprovider --timeout 300 -q "$@"

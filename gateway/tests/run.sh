#!/usr/bin/env bash
# The gateway's SDK suite: the official `openai` and `anthropic` Python SDKs (and curl)
# against llm-upstream directly and through `tollgate gateway`, with a real authority and
# sidecar. Installs its pinned packages into .cache (once, through .ci/venv.sh), builds the
# binaries it runs, and prints `SKIPPED: gateway-sdk` without python3, or fails instead
# under TOLLGATE_TEST_REQUIRE_SERVICES=1.
set -euo pipefail
cd "$(dirname "$0")/../.."

skip() {
  if [ "${TOLLGATE_TEST_REQUIRE_SERVICES:-}" = 1 ]; then
    echo "gateway-sdk: $* (required under TOLLGATE_TEST_REQUIRE_SERVICES=1)" >&2
    exit 1
  fi
  echo "SKIPPED: gateway-sdk ($*)"
  exit 0
}

command -v python3 >/dev/null 2>&1 || skip "no python3"
command -v curl >/dev/null 2>&1 || skip "no curl"
rc=0
venv=$(bash .ci/venv.sh gateway gateway/tests/requirements.txt) || rc=$?
if [ "$rc" = 3 ]; then skip "no usable python3 (venv, ensurepip)"; fi
[ "$rc" = 0 ] || exit "$rc"

cargo build --quiet -p llm-upstream --bin llm-upstream
cargo build --quiet -p tollgate --bin tollgate
target="${CARGO_TARGET_DIR:-$PWD/target}"
export LLM_UPSTREAM_BIN="$target/debug/llm-upstream"
export TOLLGATE_BIN="$target/debug/tollgate"

exec "$venv/bin/python" -m pytest -q -p no:cacheprovider gateway/tests "$@"

#!/usr/bin/env bash
# The dashboard and HTTP API suite: the finance dashboard (/ui) driven in real headless
# Chromium (Debian's `chromium`, installed with apt-get when missing; Playwright drives it,
# no browser download) and schemathesis against /openapi.json (bounded), both against a real
# authority (the `tollgate` binary's authority role on free loopback ports, temporary SQLite
# store); for an agent's spend, a real sidecar and `tollgate gateway` in front of
# `llm-upstream`, called over HTTP. Tools come from a cached venv (.cache/venvs/ui, pinned
# requirements).
# Without python3 or chromium it prints `SKIPPED: ui`, unless TOLLGATE_TEST_REQUIRE_SERVICES=1
# (CI), where that is a failure.
set -euo pipefail
cd "$(dirname "$0")/../../.."
root="$PWD"

skip() {
  if [ "${TOLLGATE_TEST_REQUIRE_SERVICES:-}" = "1" ]; then
    echo "ui suite: $1, and TOLLGATE_TEST_REQUIRE_SERVICES=1" >&2
    exit 1
  fi
  echo "SKIPPED: ui ($1)"
  exit 0
}

chromium="${TOLLGATE_CHROMIUM:-$(command -v chromium || true)}"
if [ -z "$chromium" ]; then
  # Debian's package (no snap, no download of our own). Root needs no sudo.
  if command -v apt-get >/dev/null 2>&1; then
    sudo=""
    [ "$(id -u)" = "0" ] || sudo="sudo -n"
    echo "[ui] installing chromium with apt-get" >&2
    if ! { $sudo apt-get update -qq >&2 && \
           DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends chromium >&2; }; then
      skip "chromium is not installed and apt-get could not install it"
    fi
  fi
  chromium="$(command -v chromium || true)"
  [ -n "$chromium" ] || skip "no chromium"
fi
export TOLLGATE_CHROMIUM="$chromium"

venv=$(bash .ci/venv.sh ui authority/ui/tests/requirements.txt) || {
  [ $? -eq 3 ] && skip "no usable python3 with venv"
  exit 1
}

echo "[ui] cargo build --bin tollgate --bin llm-upstream" >&2
cargo build --quiet -p tollgate --bin tollgate
cargo build --quiet -p llm-upstream --bin llm-upstream
target="${CARGO_TARGET_DIR:-$root/target}"
export TOLLGATE_BIN="$target/debug/tollgate"
export LLM_UPSTREAM_BIN="$target/debug/llm-upstream"

echo "[ui] pytest (chromium: $chromium)" >&2
cd authority/ui/tests
exec "$venv/bin/python" -m pytest -p no:cacheprovider --timeout 300 -q "$@"

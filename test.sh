#!/usr/bin/env bash
# Every test suite: the Rust workspace, then the suites in other languages (Python package,
# gateway SDK tests, dashboard in headless Chromium), each a script that installs what it
# needs into .cache (once) and prints `SKIPPED: <name>` when a tool it needs is missing,
# unless TOLLGATE_TEST_REQUIRE_SERVICES=1 (CI), where a skip is a failure.
set -euo pipefail
cd "$(dirname "$0")"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
step() { printf '\n=== %s (%s)\n' "$*" "$(date -u +%H:%M:%S)"; }

step "cargo test --workspace"
cargo test --workspace

for suite in python/tests/run.sh gateway/tests/run.sh authority/ui/tests/run.sh; do
  if [ -f "$suite" ]; then
    step "$suite"
    bash "$suite"
  fi
done
step "all suites passed"

#!/usr/bin/env bash
# Bounded fuzzing: builds every cargo-fuzz target and runs each for FUZZ_SECONDS (default
# 30), starting from its committed seeds. Exits non-zero if any target crashes, hangs
# (FUZZ_TIMEOUT seconds on one input) or fails to build. Crash inputs are left in
# <crate>/fuzz/artifacts/<target>/ for the log to name and a developer to reproduce.
#
# The machine has only a stable toolchain: sanitizer flags are nightly-only, so targets are
# built without a sanitizer (`-s none`); Rust's bounds checks, debug assertions and overflow
# checks still turn memory and arithmetic errors into crashes. Set FUZZ_SANITIZER=address
# to build with ASan (uses RUSTC_BOOTSTRAP=1).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR=never

seconds="${FUZZ_SECONDS:-30}"
timeout_s="${FUZZ_TIMEOUT:-10}"
sanitizer="${FUZZ_SANITIZER:-none}"
# One target dir for every fuzz crate: libFuzzer and shared dependencies build once.
target_dir="${FUZZ_TARGET_DIR:-$PWD/target/fuzz}"
# <crate dir>:<target> for every target.
targets=(
  client:region_attach
  core:price_book_toml
  core:price_book_json
  authority:usage_batch
  authority:admin_requests
  injector:admission_review
)

step() { printf '\n=== fuzz: %s (%s)\n' "$*" "$(date -u +%H:%M:%S)"; }

install_start=$(date +%s)
if ! cargo fuzz --version >/dev/null 2>&1; then
  step "installing cargo-fuzz"
  cargo install cargo-fuzz --locked --version 0.13.2
fi
install_s=$(($(date +%s) - install_start))
if [ "$sanitizer" != none ]; then
  export RUSTC_BOOTSTRAP=1
fi
# Unoptimized (`--dev`, still instrumented, with debug assertions and overflow checks): the
# build, not the 30-second runs, is most of the cost, and it is several times faster to
# build unoptimized. FUZZ_RELEASE=1 builds as cargo-fuzz does by default (for long runs).
if [ "${FUZZ_RELEASE:-0}" = 1 ]; then
  build_flags=(-s "$sanitizer" --target-dir "$target_dir")
else
  build_flags=(-s "$sanitizer" --dev --target-dir "$target_dir")
fi

# A cold CI build: no incremental caches to write, and line tables only (crash backtraces
# keep file:line) instead of full debug info, which is most of what the linker handles.
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"
export CARGO_PROFILE_DEV_DEBUG="${CARGO_PROFILE_DEV_DEBUG:-line-tables-only}"

start=$(date +%s)
for crate in $(printf '%s\n' "${targets[@]}" | cut -d: -f1 | sort -u); do
  step "build $crate/fuzz"
  (cd "$crate" && cargo fuzz build "${build_flags[@]}")
done
built=$(date +%s)

failed=()
for entry in "${targets[@]}"; do
  crate="${entry%%:*}"
  target="${entry#*:}"
  step "run $crate/$target for ${seconds}s"
  corpus="$(mktemp -d)"
  cp -r "$crate/fuzz/seeds/$target/." "$corpus/"
  # Seeds double as regression inputs: each runs once before the timed run mutates them.
  if ! (cd "$crate" && cargo fuzz run "${build_flags[@]}" "$target" "$corpus" -- \
    -max_total_time="$seconds" -timeout="$timeout_s" -rss_limit_mb=2048 \
    -print_final_stats=1); then
    failed+=("$crate/$target")
  fi
  rm -rf "$corpus"
done
end=$(date +%s)

step "done: cargo-fuzz install ${install_s}s, build $((built - start))s, runs $((end - built))s"
if [ "${#failed[@]}" -gt 0 ]; then
  echo "fuzz targets that crashed: ${failed[*]} (inputs under <crate>/fuzz/artifacts/)" >&2
  exit 1
fi

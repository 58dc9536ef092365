#!/usr/bin/env bash
# loom models of tollgate-client's concurrent protocols (see client/src/protocol.rs), then
# the deliberately broken variant (--cfg tollgate_broken: the lane debit as a split
# read-modify-write), which loom must reject: `loom_broken_variant_is_caught` passes only
# if the model fails with its conservation assertion.
set -euo pipefail
cd "$(dirname "$0")/.."
export LOOM_MAX_PREEMPTIONS="${LOOM_MAX_PREEMPTIONS:-2}"
start=$(date +%s)

echo "--- loom models (LOOM_MAX_PREEMPTIONS=$LOOM_MAX_PREEMPTIONS)"
RUSTFLAGS="--cfg loom" cargo test --release -p tollgate-client --target-dir target/loom \
  --lib loom_ -- --test-threads=2

echo "--- broken variant must be caught"
RUSTFLAGS="--cfg loom --cfg tollgate_broken" cargo test --release -p tollgate-client \
  --target-dir target/loom --lib loom_broken_variant_is_caught -- --exact \
  loom_tests::loom_broken_variant_is_caught

echo "--- loom done in $(( $(date +%s) - start )) s"

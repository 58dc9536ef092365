#!/usr/bin/env bash
# loom models of tollgate-client's concurrent protocols (client/src/loom_tests.rs; the
# protocol is documented in client/src/protocol.rs):
#  1. every model with LOOM_MAX_PREEMPTIONS=2 (the usual CI bound);
#  2. every model again with no preemption bound (exhaustive; the models are small
#     enough that this takes seconds);
#  3. the deliberately broken variant (--cfg tollgate_broken: the lane debit as a split
#     read-modify-write), which loom must reject: `loom_broken_variant_is_caught` passes
#     only if the model fails with its own "no top-up lost" assertion.
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)
loom_test() {
  cargo test --release -p tollgate-client --target-dir target/loom --lib "$@"
}

echo "--- loom models, LOOM_MAX_PREEMPTIONS=2"
RUSTFLAGS="--cfg loom" LOOM_MAX_PREEMPTIONS=2 loom_test loom_ -- --test-threads=2

echo "--- loom models, exhaustive (no preemption bound)"
RUSTFLAGS="--cfg loom" env -u LOOM_MAX_PREEMPTIONS \
  cargo test --release -p tollgate-client --target-dir target/loom --lib loom_ -- --test-threads=2

echo "--- broken variant must be caught"
RUSTFLAGS="--cfg loom --cfg tollgate_broken" LOOM_MAX_PREEMPTIONS=2 \
  loom_test loom_broken_variant_is_caught -- --exact loom_tests::loom_broken_variant_is_caught --nocapture

echo "--- loom done in $(( $(date +%s) - start )) s"

#!/usr/bin/env bash
# The deterministic fleet simulation (docs/simulation.md):
#  1. a bounded sweep of seeds in release: the real authority, ledger, sidecar control
#     loops and agents under a simulated clock and network with faults, every invariant
#     checked after every step; any violation fails CI (the seed replays it);
#  2. the deliberately broken variant (--cfg tollgate_sim_broken: batches keyed per
#     session, so a replayed batch is posted twice), built in its own target dir, which the
#     sweep must catch: this step fails if no seed reports a violation.
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)
SEEDS="${TOLLGATE_SIM_SEEDS:-24}"
STEPS="${TOLLGATE_SIM_STEPS:-1500}"

echo "--- sweep: $SEEDS seeds x $STEPS steps"
cargo run --release -p tollgate-sim --quiet -- --seeds "$SEEDS" --steps "$STEPS"

echo "--- broken variant must be caught"
set +e
out=$(RUSTFLAGS="--cfg tollgate_sim_broken" cargo run --release -p tollgate-sim --quiet \
  --target-dir target/sim-broken -- --seeds 8 --steps "$STEPS" --quiet 2>&1)
rc=$?
set -e
echo "$out" | grep -E "VIOLATION|summary|failed seeds" | head -20
if [ "$rc" -ne 1 ] || ! grep -q "VIOLATION" <<<"$out"; then
  echo "the broken variant was NOT caught (exit $rc): the simulation's checker is not working" >&2
  exit 1
fi
echo "--- broken variant caught; sim done in $(( $(date +%s) - start )) s"

#!/usr/bin/env bash
# The deterministic fleet simulation (docs/simulation.md):
#  1. a bounded sweep of seeds: the real authority, ledger, sidecar control loops and
#     agents under a simulated clock and network with faults, every invariant checked
#     after every step; any violation fails CI (the printed seed replays it). It runs in
#     the dev profile, which the test step has already built (only the sim is linked), with
#     the ledger's debug conservation checks on in every wallet transaction;
#  2. the deliberately broken variant (--cfg tollgate_sim_broken: batches keyed per
#     session, so a replayed batch is posted twice), built in its own target dir (a cfg
#     changes every crate's flags, as loom's does), which the checker must catch: this
#     step fails unless a violation is reported.
# Long sweeps: cargo run --release -p tollgate-sim -- --seeds K (see docs/simulation.md).
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)
SEEDS="${TOLLGATE_SIM_SEEDS:-8}"
STEPS="${TOLLGATE_SIM_STEPS:-1000}"

echo "--- sweep: $SEEDS seeds x $STEPS steps"
cargo run -p tollgate-sim --quiet -- --seeds "$SEEDS" --steps "$STEPS"
echo "--- sweep done in $(( $(date +%s) - start )) s"

echo "--- broken variant must be caught"
set +e
out=$(RUSTFLAGS="--cfg tollgate_sim_broken" CARGO_PROFILE_DEV_DEBUG=0 CARGO_INCREMENTAL=0 \
  cargo run -p tollgate-sim --quiet --target-dir target/sim-broken -- \
  --seeds 2 --steps "$STEPS" --quiet 2>&1)
rc=$?
set -e
grep -E "^VIOLATION|^summary|^failed seeds" <<<"$out" | head -20
if [ "$rc" -ne 1 ] || ! grep -q "^VIOLATION" <<<"$out"; then
  echo "$out" | tail -20
  echo "the broken variant was NOT caught (exit $rc): the simulation's checker is not working" >&2
  exit 1
fi
echo "--- broken variant caught; sim done in $(( $(date +%s) - start )) s"

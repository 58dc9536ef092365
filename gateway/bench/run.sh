#!/usr/bin/env bash
# Side-by-side benchmark: direct to llm-upstream, through `tollgate gateway` (with a real
# authority and sidecar) and through LiteLLM's proxy (PyPI, pinned in requirements.txt), all
# in front of the same llm-upstream, measured in interleaved rounds in one run by one load
# client (gateway/bench/bench.py). Builds the release binaries it runs and installs LiteLLM
# into .cache/venvs/litellm (once, through .ci/venv.sh). Not part of CI or ./test.sh: it
# measures, it does not assert.
#
# Usage: bash gateway/bench/run.sh [bench.py flags: --rounds N --block N --concurrency N
#        --tp-rounds N --tp-seconds S --max-tokens N --gateway-threads N --no-stream --keep]
set -euo pipefail
cd "$(dirname "$0")/../.."

venv=$(bash .ci/venv.sh litellm gateway/bench/requirements.txt)
cargo build --quiet --release -p llm-upstream --bin llm-upstream
cargo build --quiet --release -p tollgate --bin tollgate
target="${CARGO_TARGET_DIR:-$PWD/target}"

exec "$venv/bin/python" gateway/bench/bench.py \
  --tollgate "$target/release/tollgate" \
  --llm-upstream "$target/release/llm-upstream" \
  --litellm "$venv/bin/litellm" "$@"

#!/usr/bin/env bash
# The Python benchmark in one run: Rust reserve + commit, Python reserve + commit through
# the `tollgate` package (release wheel, installed the way users install it: `pip install
# ./python`), and a redis-py check-and-decrement against the local Redis. Output goes to
# stdout and to benches/results/python-fastpath-<UTC date and time>.txt.
set -euo pipefail
cd "$(dirname "$0")/../.."
venv=$(bash .ci/venv.sh python-bench python/bench/requirements.txt)
export PATH="$venv/bin:$PATH"
echo "[bench] pip install ./python (release build)" >&2
"$venv/bin/python" -m pip install --quiet --force-reinstall --no-deps --no-build-isolation \
  --disable-pip-version-check ./python
echo "[bench] the Rust side (release)" >&2
cargo build --quiet --release -p tollgate-python --features bench --example bench_region
out="benches/results/python-fastpath-$(date -u +%Y-%m-%dT%H%M).txt"
{
  echo "# python/bench/run.sh on $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "# $(uname -srm); $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); $(nproc) CPUs; load $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "# $("$venv/bin/python" --version), rustc $(rustc --version | cut -d' ' -f2)"
  "$venv/bin/python" python/bench/fastpath.py target/release/examples/bench_region
  echo "# load after: $(cut -d' ' -f1-3 /proc/loadavg)"
} | tee "$out"
echo "[bench] written to $out" >&2

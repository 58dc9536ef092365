"""Python reserve + commit on the fast path, beside Rust's and a redis-py check-and-decrement.

Run by ``python/bench/run.sh`` (which builds the release wheel and the Rust side). The Rust
side (``python/examples/bench_region.rs``) creates the fast-path bench's region, prints its
own figures, then serves the region as the sidecar between timed stretches (as the Rust
bench does), so every timed call takes the normal path.

The call is the Rust bench's: model-rated (1,200 input tokens, at most 800 out, committed
at 1,180 / 311 = 1,802 micro-credits), 4 limits through the lane, a task, interactive.
Per-op samples time one ``reserve`` + ``commit`` with ``time.perf_counter_ns`` (the
clock's own cost, printed, is inside every sample); batched samples time 32 in a row.
The Redis peer is the Rust bench's Lua script (4 limits with a floor and a task budget,
checked then debited, one ``EVALSHA`` round trip) through redis-py on its default
connection, against ``TOLLGATE_TEST_REDIS_URL`` (default redis://127.0.0.1:6379).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from statistics import mean

import tollgate

SERVE_EVERY = 16_384
WARMUP = 50_000
SAMPLES = 500_000
BATCHES = 20_000
BATCH = 32
REDIS_SAMPLES = 20_000
MODEL, TENANT = "bench-model", "acme"

SCRIPT = """
local amount = tonumber(ARGV[1])
local floor = tonumber(ARGV[2])
for i = 1, #KEYS do
  local have = tonumber(redis.call('GET', KEYS[i]) or '0')
  local need = amount
  if i < #KEYS then need = amount + floor end
  if have < need then return i end
end
for i = 1, #KEYS do
  redis.call('DECRBY', KEYS[i], amount)
end
return 0
"""


def fmt(ns: float) -> str:
    return f"{ns:.1f} ns" if ns < 1_000 else f"{ns / 1_000:.2f} us"


def summary(samples: list) -> str:
    s = sorted(samples)
    n = len(s)
    pick = lambda q: s[min(n - 1, int(q * n))]  # noqa: E731
    return (f"p50 {fmt(pick(0.50))} p99 {fmt(pick(0.99))} p99.9 {fmt(pick(0.999))} "
            f"max {fmt(s[-1])} mean {fmt(mean(s))} (n={n})")


class Sidecar:
    def __init__(self, binary: str) -> None:
        self.p = subprocess.Popen([binary], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        first = self.p.stdout.readline().split(" ", 1)
        assert first[0] == "region", first
        self.region = first[1].strip()

    def rust_figures(self) -> list:
        return [self.p.stdout.readline().rstrip() for _ in range(2)]

    def serve(self) -> None:
        self.p.stdin.write("serve\n")
        self.p.stdin.flush()
        assert self.p.stdout.readline().strip() == "ok"

    def finish(self) -> str:
        self.p.stdin.close()
        out = self.p.stdout.read().strip()
        assert self.p.wait() == 0, out
        return out


def timed(sc: Sidecar, op, label: str) -> list:
    clock = time.perf_counter_ns
    for i in range(WARMUP):
        op()
        if i % SERVE_EVERY == SERVE_EVERY - 1:
            sc.serve()
    per_op = []
    for i in range(SAMPLES):
        t0 = clock()
        op()
        per_op.append(clock() - t0)
        if i % SERVE_EVERY == SERVE_EVERY - 1:
            sc.serve()
    batched = []
    done = 0
    for _ in range(BATCHES):
        t0 = clock()
        for _ in range(BATCH):
            op()
        batched.append((clock() - t0) / BATCH)
        done += BATCH
        if done >= SERVE_EVERY:
            sc.serve()
            done = 0
    print(f"python    {label}, per-op    : {summary(per_op)}")
    print(f"python    {label}, batch {BATCH}  : {summary(batched)}")
    return per_op


def redis_peer() -> None:
    url = os.environ.get("TOLLGATE_TEST_REDIS_URL", "redis://127.0.0.1:6379")
    try:
        import redis

        r = redis.Redis.from_url(url, socket_timeout=1)
        r.ping()
    except Exception as e:  # noqa: BLE001 - reported, not hidden
        print(f"SKIPPED: redis-py check-and-decrement: Redis at {url} unreachable ({e})")
        return
    prefix = f"tgbench:{uuid.uuid4().hex}"
    keys = [f"{prefix}:limit{i}" for i in range(4)] + [f"{prefix}:task"]
    plenty = 2**62
    for k in keys:
        r.set(k, plenty)
    sha = r.script_load(SCRIPT)
    clock = time.perf_counter_ns
    for _ in range(1_000):
        r.evalsha(sha, 5, *keys, 2_800, 0)
    samples = []
    for _ in range(REDIS_SAMPLES):
        t0 = clock()
        refused = r.evalsha(sha, 5, *keys, 2_800, 0)
        samples.append(clock() - t0)
        assert refused == 0
    r.delete(*keys)
    print(f"redis-py  EVALSHA check-and-decrement (1 round trip, {url}), per-op: {summary(samples)}")


def main() -> None:
    sc = Sidecar(sys.argv[1])
    for line in sc.rust_figures():
        print(line)
    gate = tollgate.Gate(sc.region, tenant=TENANT, max_wait=1.0)
    model = gate.model(MODEL)
    task = gate.open_task("bench", budget=2**62)
    for _ in range(1_000):
        try:
            gate.reserve(model, input_tokens=1_200, max_output_tokens=800, task=task).commit(1_180, 311)
            break
        except tollgate.Denied:
            sc.serve()
    charge = gate.reserve(model, input_tokens=1_200, max_output_tokens=800, task=task).commit(1_180, 311)
    assert charge == 1_802, charge

    clock = time.perf_counter_ns
    overhead = []
    for _ in range(100_000):
        t0 = clock()
        overhead.append(clock() - t0)
    print(f"python    perf_counter_ns alone     : {summary(overhead)}")

    def handle() -> None:
        gate.reserve(model, input_tokens=1_200, max_output_tokens=800, task=task).commit(
            input_tokens=1_180, output_tokens=311)

    def by_name() -> None:
        gate.reserve(MODEL, input_tokens=1_200, max_output_tokens=800, task=task).commit(
            input_tokens=1_180, output_tokens=311)

    def managed() -> None:
        with gate.reserve(model, input_tokens=1_200, max_output_tokens=800, task=task) as h:
            h.commit(input_tokens=1_180, output_tokens=311)

    timed(sc, handle, "rated call (Model handle)")
    timed(sc, by_name, "rated call (model by name)")
    timed(sc, managed, "rated call (with-block)  ")
    del gate, model, task
    redis_peer()
    print(sc.finish())


if __name__ == "__main__":
    main()

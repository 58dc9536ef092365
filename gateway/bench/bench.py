"""Side-by-side latency and throughput: direct to llm-upstream, through `tollgate gateway`,
and through LiteLLM's proxy, all in front of the same llm-upstream, in one run.

Started by gateway/bench/run.sh (which builds the binaries and the venv). This script starts
every process, warms each path up, then measures the three in interleaved rounds with one
load client (below) so that all three are measured the same way over real HTTP on loopback:

- latency: one keep-alive connection per path, one request at a time; each round sends a
  block of requests to each path in turn (the order rotates per round), so a burst of load
  on the machine hits all three alike;
- throughput: a fixed number of keep-alive connections per path, each sending requests
  back to back for a fixed time; again interleaved in rounds.

The load client is a minimal HTTP/1.1 client on asyncio streams (Content-Length and chunked
bodies), not httpx: a heavier client's own cost would dominate the direct path's latency
and cap the throughput of the fast paths. Its cost is the same for all three paths and
cancels out of "added over direct".
"""

import argparse
import asyncio
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

MODEL = "bench-model"
ADMIN = "bench-admin-token"
GW_KEY = "gk-bench"
LITELLM_KEY = "sk-bench-master"
UPSTREAM_KEY = "up-secret"
C = 1_000_000


# --- the load client ---------------------------------------------------------------------

class Conn:
    """One keep-alive HTTP/1.1 connection."""

    def __init__(self, host, port):
        self.host, self.port = host, port
        self.r = self.w = None

    async def open(self):
        self.r, self.w = await asyncio.open_connection(self.host, self.port)
        sock = self.w.get_extra_info("socket")
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def close(self):
        if self.w is not None:
            self.w.close()

    reconnects = 0

    async def request(self, raw):
        """Send `raw` (a whole request), read the whole response; returns (status, body).
        A connection the server closed while idle is reopened once (counted in
        `Conn.reconnects`), as any keep-alive client does."""
        self.w.write(raw)
        r = self.r
        status_line = await r.readline()
        if not status_line:
            Conn.reconnects += 1
            self.close()
            await self.open()
            self.w.write(raw)
            r = self.r
            status_line = await r.readline()
            if not status_line:
                raise ConnectionError("connection closed by the server")
        status = int(status_line.split(b" ", 2)[1])
        length, chunked, close = None, False, False
        while True:
            line = await r.readline()
            if line in (b"\r\n", b"\n", b""):
                break
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"transfer-encoding" and b"chunked" in value.lower():
                chunked = True
            elif name == b"connection" and b"close" in value.lower():
                close = True
        if chunked:
            parts = []
            while True:
                size = int((await r.readline()).split(b";")[0], 16)
                if size == 0:
                    await r.readline()  # the empty trailer
                    break
                parts.append(await r.readexactly(size))
                await r.readline()
            body = b"".join(parts)
        elif length is not None:
            body = await r.readexactly(length)
        else:
            body = await r.read()
            close = True
        if close:
            self.close()
            await self.open()
        return status, body


def build_request(port, path, auth, stream, max_tokens):
    body = {
        "model": MODEL,
        "messages": [{"role": "user", "content": "say something short please"}],
        "max_tokens": max_tokens,
        "stream": stream,
    }
    if stream:
        body["stream_options"] = {"include_usage": True}
    data = json.dumps(body).encode()
    head = (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            f"Authorization: Bearer {auth}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(data)}\r\n\r\n")
    return head.encode() + data


def check(name, status, body, stream, max_tokens):
    """A response must be a real completion of `max_tokens` tokens, or the bench is wrong."""
    if status != 200:
        raise RuntimeError(f"{name}: HTTP {status}: {body[:300]!r}")
    if stream:
        if b"[DONE]" not in body or b'"completion_tokens"' not in body:
            raise RuntimeError(f"{name}: stream without usage or [DONE]: {body[-300:]!r}")
    else:
        usage = json.loads(body)["usage"]
        if usage["completion_tokens"] != max_tokens:
            raise RuntimeError(f"{name}: unexpected usage {usage}")


async def latency_block(conn, raw, n, out):
    for _ in range(n):
        t0 = time.perf_counter_ns()
        status, body = await conn.request(raw)
        out.append(time.perf_counter_ns() - t0)
        if status != 200:
            raise RuntimeError(f"HTTP {status}: {body[:300]!r}")


async def throughput_block(conns, raw, seconds):
    """Requests completed by `conns` sending back to back for `seconds`."""
    deadline = time.perf_counter() + seconds
    done = 0

    async def one(conn):
        nonlocal done
        while time.perf_counter() < deadline:
            status, body = await conn.request(raw)
            if status != 200:
                raise RuntimeError(f"HTTP {status}: {body[:300]!r}")
            done += 1

    t0 = time.perf_counter()
    await asyncio.gather(*(one(c) for c in conns))
    return done, time.perf_counter() - t0


def pct(sorted_ns, p):
    return sorted_ns[round((len(sorted_ns) - 1) * p)]


async def measure(paths, args, stream, out):
    """paths: [(name, port, path, auth)]. Prints and returns the table rows."""
    mt = args.max_tokens
    raws = {name: build_request(port, path, auth, stream, mt) for name, port, path, auth in paths}
    ports = {name: port for name, port, _, _ in paths}
    kind = "streamed" if stream else "whole"

    # Correctness and warm-up: each path answers a real completion, then warm-up requests.
    lat_conns = {}
    for name, port, _, _ in paths:
        c = Conn("127.0.0.1", port)
        await c.open()
        lat_conns[name] = c
        # The gateway denies (429) until the sidecar holds its first lease for the tenant.
        deadline = time.monotonic() + 60
        while True:
            status, body = await c.request(raws[name])
            if status != 429 or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.2)
        check(name, status, body, stream, mt)
        await latency_block(c, raws[name], args.warmup, [])

    lats = {name: [] for name in raws}
    names = list(raws)
    t0 = time.perf_counter()
    for rnd in range(args.rounds):
        order = names[rnd % len(names):] + names[:rnd % len(names)]
        for name in order:
            await latency_block(lat_conns[name], raws[name], args.block, lats[name])
    lat_secs = time.perf_counter() - t0
    for c in lat_conns.values():
        c.close()

    # Throughput: fixed concurrency, interleaved rounds.
    tp_conns = {}
    for name in names:
        conns = [Conn("127.0.0.1", ports[name]) for _ in range(args.concurrency)]
        for c in conns:
            await c.open()
        await throughput_block(conns, raws[name], 0.5)  # warm every connection
        tp_conns[name] = conns
    done = {name: 0 for name in names}
    secs = {name: 0.0 for name in names}
    for rnd in range(args.tp_rounds):
        order = names[rnd % len(names):] + names[:rnd % len(names)]
        for name in order:
            d, s = await throughput_block(tp_conns[name], raws[name], args.tp_seconds)
            done[name] += d
            secs[name] += s
    for conns in tp_conns.values():
        for c in conns:
            c.close()

    direct = sorted(lats["direct"])
    d50, d99, dmean = pct(direct, 0.5), pct(direct, 0.99), statistics.fmean(direct)
    out(f"\n{kind} chat completion ({mt} output tokens): latency {args.rounds} rounds x "
        f"{args.block} sequential requests per path ({lat_secs:.1f} s); throughput "
        f"{args.tp_rounds} rounds x {args.tp_seconds} s per path at concurrency "
        f"{args.concurrency}")
    out(f"{'path':<10} {'p50':>9} {'p90':>9} {'p99':>9} {'p99.9':>9} {'mean':>9} | "
        f"{'+p50':>9} {'+p99':>9} {'+mean':>9} | {'req/s':>8}")
    rows = {}
    for name in names:
        s = sorted(lats[name])
        p50, p90, p99, p999 = (pct(s, q) for q in (0.5, 0.9, 0.99, 0.999))
        mean = statistics.fmean(s)
        rps = done[name] / secs[name]
        rows[name] = dict(p50=p50, p99=p99, mean=mean, rps=rps)
        if name == "direct":
            added = f"{'':>9} {'':>9} {'':>9}"
        else:
            added = f"{us(p50 - d50):>9} {us(p99 - d99):>9} {us(mean - dmean):>9}"
        out(f"{name:<10} {us(p50):>9} {us(p90):>9} {us(p99):>9} {us(p999):>9} {us(mean):>9} | "
            f"{added} | {rps:>8.0f}")
    out("(times in us; +p50/+p99/+mean: the path's percentile minus direct's; req/s: "
        "completed requests per second of the throughput phase; "
        f"idle connections reopened so far: {Conn.reconnects})")
    return rows


def us(ns):
    return f"{ns / 1000:.1f}"


# --- the processes -------------------------------------------------------------------------

class Proc:
    def __init__(self, args, log, env=None):
        self.log = open(log, "w")
        self.p = subprocess.Popen(args, stdout=self.log, stderr=subprocess.STDOUT, env=env,
                                  start_new_session=True)

    def stop(self):
        if self.p.poll() is None:
            self.p.terminate()
            try:
                self.p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.p.pid, signal.SIGKILL)
                self.p.wait()
        self.log.close()


def wait_file(path, proc, what, timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.p.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.p.returncode}")
        if os.path.exists(path):
            text = open(path).read().strip()
            if text:
                return text
        time.sleep(0.05)
    raise RuntimeError(f"{what} did not start within {timeout} s")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(port, path, proc, what, timeout=120):
    import urllib.request
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.p.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.p.returncode}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as r:
                if r.status == 200:
                    return
        except Exception:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{what} did not answer {path} within {timeout} s")


def start_all(args, d, procs):
    tollgate, upstream_bin = args.tollgate, args.llm_upstream

    # llm-upstream, no artificial latency, one tokio thread (as the Rust latency example).
    pf = os.path.join(d, "upstream.port")
    up = Proc([upstream_bin, "--port-file", pf, "--threads", "1"], os.path.join(d, "upstream.log"))
    procs.append(up)
    up_port = int(wait_file(pf, up, "llm-upstream"))

    # Authority (SQLite), one tenant funded generously, a sidecar, the gateway.
    key = os.path.join(d, "authority.key")
    subprocess.run([tollgate, "authority", "keygen", "--out", key], check=True,
                   stdout=subprocess.DEVNULL)
    conf = os.path.join(d, "authority.toml")
    with open(conf, "w") as f:
        f.write(f'admin_token = "{ADMIN}"\n[[sidecars]]\nname = "pod-a"\n'
                'token = "pod-a-token"\ntenants = ["bench"]\n')
    alog = os.path.join(d, "authority.log")
    auth = Proc([tollgate, "authority", "--store", f"sqlite://{os.path.join(d, 'ledger.db')}",
                 "--signing-key", key, "--listen", "127.0.0.1:0", "--http", "off",
                 "--config", conf, "--log", "warn,tollgate=info"], alog)
    procs.append(auth)
    deadline = time.monotonic() + 60
    authority = None
    while time.monotonic() < deadline and authority is None:
        m = re.search(r"gRPC on ([0-9.:]+)", open(alog).read())
        if m:
            authority = f"http://{m.group(1)}"
        elif auth.p.poll() is not None:
            raise RuntimeError("the authority exited")
        else:
            time.sleep(0.05)
    if authority is None:
        raise RuntimeError("the authority did not start")

    def ctl(*a):
        subprocess.run([tollgate, "ctl", "--authority", authority, "--admin-token", ADMIN, *a],
                       check=True, stdout=subprocess.DEVNULL)

    ctl("tenant", "create", "bench", "--name", "bench")
    book = os.path.join(d, "prices.toml")
    with open(book, "w") as f:
        # gpt-4o-mini's list prices in credits per million tokens (as if 1 credit = $1).
        f.write(f'version = 0\ndefault_max_output_tokens = 1000\n[[models]]\nname = "{MODEL}"\n'
                'max_output_tokens = 16384\npricing = { kind = "per_token", '
                'input_per_million = 150000, output_per_million = 600000 }\n')
    ctl("price-book", "set", "bench", "--file", book)
    ctl("grant", "add", "bench", "--kind", "purchased", "--amount", "1000000.000000")

    region = os.path.join(d, "pod", "region")
    os.makedirs(os.path.dirname(region))
    side_http = free_port()
    tok = os.path.join(d, "pod-a-token")
    with open(tok, "w") as f:
        f.write("pod-a-token")
    procs.append(Proc([tollgate, "sidecar", "--region", region, "--authority", authority,
                       "--sidecar-id", "pod-a", "--token-file", tok, "--tenants", "bench",
                       "--http", f"127.0.0.1:{side_http}", "--log", "warn"],
                      os.path.join(d, "sidecar.log")))
    upkey = os.path.join(d, "upstream.key")
    with open(upkey, "w") as f:
        f.write(UPSTREAM_KEY + "\n")
    gconf = os.path.join(d, "gateway.toml")
    with open(gconf, "w") as f:
        f.write(f'default_max_output_tokens = 64\n[[upstreams]]\nmodels = ["*"]\n'
                f'base_url = "http://127.0.0.1:{up_port}"\napi_key_file = "{upkey}"\n'
                f'[[keys]]\nkey = "{GW_KEY}"\ntenant = "bench"\nagent = "bench-agent"\n')
    gpf = os.path.join(d, "gateway.port")
    gw = Proc([tollgate, "gateway", "--config", gconf, "--region", region,
               "--listen", "127.0.0.1:0", "--port-file", gpf,
               "--sidecar-metrics", f"http://127.0.0.1:{side_http}/metrics",
               "--threads", str(args.gateway_threads), "--log", "warn"],
              os.path.join(d, "gateway.log"))
    procs.append(gw)
    gw_port = int(wait_file(gpf, gw, "tollgate gateway"))

    if not args.litellm:
        return up_port, gw_port, None

    # LiteLLM's proxy: the same model at llm-upstream's OpenAI base URL, a master key, no
    # database (see BENCHMARKS.md: its per-key budgets need Prisma's engines).
    ll_port = free_port()
    lconf = os.path.join(d, "litellm.yaml")
    with open(lconf, "w") as f:
        f.write(f"model_list:\n  - model_name: {MODEL}\n    litellm_params:\n"
                f"      model: openai/{MODEL}\n      api_base: http://127.0.0.1:{up_port}/v1\n"
                f"      api_key: {UPSTREAM_KEY}\n"
                "      input_cost_per_token: 0.00000015\n"
                "      output_cost_per_token: 0.0000006\n"
                f"general_settings:\n  master_key: {LITELLM_KEY}\n"
                "litellm_settings:\n  set_verbose: false\n  telemetry: false\n")
    env = dict(os.environ, LITELLM_LOCAL_MODEL_COST_MAP="True", LITELLM_LOG="ERROR",
               DISABLE_SCHEMA_UPDATE="True")
    env.pop("DATABASE_URL", None)
    # Uvicorn's access log off, as the gateway logs nothing per call at `--log warn`.
    logconf = os.path.join(d, "litellm-log.json")
    with open(logconf, "w") as f:
        json.dump({"version": 1, "disable_existing_loggers": False,
                   "loggers": {"uvicorn.access": {"level": "WARNING"}}}, f)
    ll = Proc([args.litellm, "--config", lconf, "--host", "127.0.0.1", "--port", str(ll_port),
               "--num_workers", "1", "--log_config", logconf,
               # Uvicorn closes idle keep-alive connections after 5 s, shorter than a round.
               "--keepalive_timeout", "300"], os.path.join(d, "litellm.log"),
              env=env)
    procs.append(ll)
    wait_http(ll_port, "/health/liveliness", ll, "litellm")
    return up_port, gw_port, ll_port


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tollgate", required=True)
    ap.add_argument("--llm-upstream", required=True)
    ap.add_argument("--litellm", help="the litellm CLI of the venv (absent: LiteLLM skipped)")
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--block", type=int, default=100, help="requests per path per round")
    ap.add_argument("--warmup", type=int, default=300)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--tp-rounds", type=int, default=3)
    ap.add_argument("--tp-seconds", type=float, default=3.0)
    ap.add_argument("--max-tokens", type=int, default=16)
    ap.add_argument("--gateway-threads", type=int, default=1)
    ap.add_argument("--no-stream", action="store_true", help="whole completions only")
    ap.add_argument("--keep", action="store_true", help="keep the work directory (logs)")
    args = ap.parse_args()
    try:
        import uvloop
        uvloop.install()
        loop_name = "uvloop"
    except ImportError:
        loop_name = "asyncio"

    d = tempfile.mkdtemp(prefix="tollgate-gw-bench-")
    procs = []
    out = lambda s: print(s, flush=True)
    try:
        up_port, gw_port, ll_port = start_all(args, d, procs)
        import importlib.metadata as md
        try:
            ll_version = md.version("litellm") if ll_port else "skipped"
        except md.PackageNotFoundError:
            ll_version = "?"
        out(f"# gateway side-by-side bench: llm-upstream (1 thread), tollgate gateway "
            f"(--threads {args.gateway_threads}, authority + sidecar), LiteLLM proxy "
            f"{ll_version} (1 uvicorn worker, master key, no database, so NO budget: its per-key "
            "budgets need Prisma's query engine, which cannot be downloaded here, and its "
            "proxy-wide max_budget is not enforced without a database); "
            f"load client: Python {sys.version.split()[0]} {loop_name}, raw HTTP/1.1 keep-alive "
            "on loopback")
        out(f"# {time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime())}, load average "
            f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}, {os.cpu_count()} CPUs")
        paths = [("direct", up_port, "/v1/chat/completions", UPSTREAM_KEY),
                 ("gateway", gw_port, "/v1/chat/completions", GW_KEY),
                 ("litellm", ll_port, "/v1/chat/completions", LITELLM_KEY)]
        paths = [p for p in paths if p[1] is not None]
        asyncio.run(measure(paths, args, False, out))
        if not args.no_stream:
            asyncio.run(measure(paths, args, True, out))
        out(f"# done {time.strftime('%H:%M:%S UTC', time.gmtime())}, load average "
            f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    finally:
        for p in reversed(procs):
            p.stop()
        if args.keep:
            print(f"# logs kept in {d}", file=sys.stderr)
        else:
            shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    main()

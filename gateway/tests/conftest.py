"""Fixtures for the gateway's SDK suite: processes started per test session, stopped at
the end. Binaries come from the environment that run.sh sets."""

import os
import subprocess
import tempfile
import time

import pytest


def wait_for_file(path, proc, what, timeout=30.0):
    """The content of `path` once `proc` wrote it, or a failure naming `what`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}")
        if os.path.exists(path):
            with open(path) as f:
                text = f.read().strip()
            if text:
                return text
        time.sleep(0.02)
    raise RuntimeError(f"{what} did not start within {timeout} s")


class Process:
    """A child process stopped (SIGTERM, then SIGKILL) at teardown."""

    def __init__(self, args, log, env=None):
        self.log = open(log, "w")
        self.proc = subprocess.Popen(args, stdout=self.log, stderr=subprocess.STDOUT, env=env)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


@pytest.fixture(scope="session")
def workdir():
    with tempfile.TemporaryDirectory(prefix="tollgate-gw-") as d:
        yield d


def start_upstream(workdir, name, *extra):
    port_file = os.path.join(workdir, f"{name}.port")
    p = Process(
        [os.environ["LLM_UPSTREAM_BIN"], "--port-file", port_file, *extra],
        os.path.join(workdir, f"{name}.log"),
    )
    port = wait_for_file(port_file, p.proc, "llm-upstream")
    return p, f"http://127.0.0.1:{port}"


@pytest.fixture(scope="session")
def upstream(workdir):
    """llm-upstream on its own (no key required), as `http://127.0.0.1:PORT`."""
    p, url = start_upstream(workdir, "upstream-plain")
    yield url
    p.stop()


# --- The gateway's stack: authority, sidecar and `tollgate gateway` in front of llm-upstream
# (the same way python/tests/harness.py starts an authority and a sidecar from the built
# `tollgate` binary: SQLite store, one sidecar credential, `tollgate ctl` for setup).

import re
import socket
import threading
from decimal import Decimal

ADMIN = "gw-suite-admin-token"
CREDIT = 1_000_000
#: 1 credit per million tokens in and out: a call of n tokens costs n micro-credits, so a
#: statement's total is the sum of the usage the upstream reported.
MODEL = "unit-model"
TENANTS = ("acme", "tight", "clampy", "burny")
#: The degrade rule routes background calls of MODEL here when depletion is projected.
CHEAP = "cheap-model"
UPSTREAM_KEY = "up-secret"
KEYS = {
    # key: (tenant, extra TOML lines)
    "gk-agent": ("acme", 'agent = "support-bot"\nfeature = "tickets"\ninitiator = "agent"'),
    "gk-human": ("acme", ""),
    "gk-tight": ("tight", 'tier = "background"'),
    # The only key of its tenant: no other call holds that tenant's budget in a lane.
    "gk-clamp": ("clampy", 'tier = "background"\nclamp = true\nclamp_min_tokens = 16'),
    "gk-burny": ("burny", ""),
    "gk-burny-bg": ("burny", 'tier = "background"'),
}
PRICE_BOOK = f"""\
version = 0
default_max_output_tokens = 1000

[[models]]
name = "{MODEL}"
max_output_tokens = 100000
pricing = {{ kind = "per_token", input_per_million = {CREDIT}, output_per_million = {CREDIT} }}

[[models]]
name = "cheap-model"
max_output_tokens = 100000
pricing = {{ kind = "per_token", input_per_million = {CREDIT}, output_per_million = {CREDIT} }}
"""


def micro(text):
    return int(Decimal(text) * CREDIT)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Stack:
    """The processes and what the tests need of them."""

    def __init__(self, workdir):
        self.dir = workdir
        self.bin = os.environ["TOLLGATE_BIN"]
        self.procs = []

    def start_authority(self):
        key = os.path.join(self.dir, "authority.key")
        subprocess.run([self.bin, "authority", "keygen", "--out", key], check=True,
                       stdout=subprocess.DEVNULL)
        config = os.path.join(self.dir, "authority.toml")
        tenants = ", ".join(f'"{t}"' for t in TENANTS)
        with open(config, "w") as f:
            f.write(f'admin_token = "{ADMIN}"\n[[sidecars]]\nname = "pod-a"\n'
                    f'token = "pod-a-token"\ntenants = [{tenants}]\n'
                    "[leases]\nttl_secs = 30\nsettle_grace_secs = 15\nrelearn_grace_secs = 1\n")
        log = os.path.join(self.dir, "authority.log")
        p = Process([self.bin, "authority", "--store",
                     f"sqlite://{os.path.join(self.dir, 'ledger.db')}", "--signing-key", key,
                     "--listen", "127.0.0.1:0", "--http", "off", "--config", config,
                     "--log", "info"], log)
        self.procs.append(p)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with open(log) as f:
                m = re.search(r"gRPC on ([0-9.:]+)", f.read())
            if m:
                self.authority = f"http://{m.group(1)}"
                return
            if p.proc.poll() is not None:
                break
            time.sleep(0.05)
        raise RuntimeError("the authority did not start")

    def ctl(self, *args):
        out = subprocess.run([self.bin, "ctl", "--authority", self.authority,
                              "--admin-token", ADMIN, *args], capture_output=True, text=True)
        if out.returncode != 0:
            raise RuntimeError(f"tollgate ctl {' '.join(args)}: {out.stderr.strip()}")
        return out.stdout

    def setup_tenant(self, tenant, grant):
        self.ctl("tenant", "create", tenant, "--name", tenant)
        book = os.path.join(self.dir, f"prices-{tenant}.toml")
        with open(book, "w") as f:
            f.write(PRICE_BOOK)
        self.ctl("price-book", "set", tenant, "--file", book)
        self.ctl("grant", "add", tenant, "--kind", "purchased",
                 "--amount", f"{grant // CREDIT}.{grant % CREDIT:06d}")

    def start_sidecar(self):
        os.makedirs(os.path.join(self.dir, "pod"), exist_ok=True)
        self.region = os.path.join(self.dir, "pod", "region")
        self.sidecar_http = free_port()
        token = os.path.join(self.dir, "pod-a-token")
        with open(token, "w") as f:
            f.write("pod-a-token")
        self.procs.append(Process(
            [self.bin, "sidecar", "--region", self.region, "--authority", self.authority,
             "--sidecar-id", "pod-a", "--token-file", token, "--tenants", ",".join(TENANTS),
             "--http", f"127.0.0.1:{self.sidecar_http}", "--log", "info"],
            os.path.join(self.dir, "sidecar.log")))

    def start_gateway(self, upstream_url):
        keyfile = os.path.join(self.dir, "upstream.key")
        with open(keyfile, "w") as f:
            f.write(UPSTREAM_KEY + "\n")
        lines = ["default_max_output_tokens = 64", "[[upstreams]]", 'models = ["*"]',
                 f'base_url = "{upstream_url}"', f'api_key_file = "{keyfile}"']
        for key, (tenant, extra) in KEYS.items():
            lines += ["[[keys]]", f'key = "{key}"', f'tenant = "{tenant}"', extra]
        token = os.path.join(self.dir, "admin.token")
        with open(token, "w") as f:
            f.write(ADMIN)
        lines += ["[degrade]", f'authority = "{self.authority}"', f'token_file = "{token}"',
                  "horizon_secs = 36000", "poll_secs = 1", 'tiers = ["background"]',
                  "[degrade.route]", f'"{MODEL}" = "{CHEAP}"']
        self.gateway_config = os.path.join(self.dir, "gateway.toml")
        with open(self.gateway_config, "w") as f:
            f.write("\n".join(lines) + "\n")
        p, self.gateway = self.spawn_gateway("gateway")
        self.procs.append(p)

    def spawn_gateway(self, name):
        """Another `tollgate gateway` on the same region and config: (Process, URL)."""
        port_file = os.path.join(self.dir, f"{name}.port")
        p = Process([self.bin, "gateway", "--config", self.gateway_config,
                     "--region", self.region, "--listen", "127.0.0.1:0",
                     "--port-file", port_file,
                     "--sidecar-metrics", f"http://127.0.0.1:{self.sidecar_http}/metrics",
                     "--metrics-interval-ms", "100", "--log", "info",
                     # One worker: one lane per key class, so what the pod holds of a small
                     # budget is never stranded in another worker's lane (docs/gateway.md).
                     "--threads", "1"],
                    os.path.join(self.dir, f"{name}.log"))
        port = wait_for_file(port_file, p.proc, "tollgate gateway")
        return p, f"http://127.0.0.1:{port}"

    def metric(self, name):
        """A sidecar metric's value (0 if absent)."""
        import urllib.request
        with urllib.request.urlopen(f"http://127.0.0.1:{self.sidecar_http}/metrics",
                                    timeout=5) as r:
            for line in r.read().decode().splitlines():
                if line.startswith(name + " ") or line.startswith(name + "{"):
                    return int(float(line.rsplit(" ", 1)[1]))
        return 0

    def statement(self, tenant):
        """(total micro-credits, calls) of the tenant's statement."""
        text = self.ctl("statement", tenant)
        m = re.search(r"statement of \S+: ([\d.]+) credits(?: charged)? over (\d+) calls", text)
        if not m:
            raise RuntimeError(f"unexpected statement: {text}")
        return micro(m.group(1)), int(m.group(2))

    def stop(self):
        for p in reversed(self.procs):
            p.stop()


@pytest.fixture(scope="session")
def stack(workdir):
    if not os.environ.get("TOLLGATE_BIN"):
        pytest.skip("TOLLGATE_BIN not set")
    s = Stack(workdir)
    try:
        s.start_authority()
        s.setup_tenant("acme", 1000 * CREDIT)
        s.setup_tenant("tight", 5000)
        s.setup_tenant("clampy", 5000)
        s.setup_tenant("burny", 100000)
        s.start_sidecar()
        up, url = start_upstream(workdir, "upstream-keyed", "--api-key", UPSTREAM_KEY)
        s.procs.append(up)
        s.upstream = url
        s.start_gateway(url)
        yield s
    finally:
        s.stop()

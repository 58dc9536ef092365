"""Real processes for the Python suite: ``tollgate authority``, ``tollgate sidecar`` and
``tollgate ctl`` (the binary ``cargo build --bin tollgate`` makes), configured as the Rust
end-to-end tests configure them (``tests/e2e/support.rs``), and Python agent processes
(``agent.py``).

Set ``TOLLGATE_BIN`` to use another binary, ``PY_E2E_VERBOSE=1`` to see the components' logs.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Dict, List, Optional, Sequence

ROOT = Path(__file__).resolve().parents[2]
TARGET = Path(os.environ.get("CARGO_TARGET_DIR", str(ROOT / "target")))
BIN = Path(os.environ.get("TOLLGATE_BIN", str(TARGET / "debug" / "tollgate")))
AGENT = Path(__file__).with_name("agent.py")
ADMIN = "py-suite-admin-token"
TENANT = "acme"
CREDIT = 1_000_000
#: 1 credit per million tokens in and out: a call of n tokens costs n micro-credits.
MODEL = "unit-model"
#: Priced like a small real model (per million: 0.15 credits in, 0.60 out), for the SDK tests.
SDK_MODELS = ("gpt-4o-mini", "claude-3-5-haiku-latest")
VERBOSE = os.environ.get("PY_E2E_VERBOSE") == "1"

PRICE_BOOK = f"""\
version = 0
default_max_output_tokens = 1000

[[models]]
name = "{MODEL}"
max_output_tokens = 1000
pricing = {{ kind = "per_token", input_per_million = {CREDIT}, output_per_million = {CREDIT} }}
""" + "".join(
    f"""
[[models]]
name = "{m}"
max_output_tokens = 4096
pricing = {{ kind = "per_token", input_per_million = 150000, output_per_million = 600000 }}
"""
    for m in SDK_MODELS
) + """
[[models]]
name = "resolved-ticket"
pricing = { kind = "per_outcome", price_per_outcome = 990000 }
"""


def micro(text: str) -> int:
    """``ctl``'s decimal credits ("1.234567") as micro-credits, exactly."""
    return int(Decimal(text) * CREDIT)


def credits_arg(m: int) -> str:
    """Micro-credits as ``ctl``'s decimal credits."""
    return f"{m // CREDIT}.{m % CREDIT:06d}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _drain(stream, name: str, on_line=None) -> None:
    for raw in iter(stream.readline, b""):
        line = raw.decode(errors="replace").rstrip()
        if on_line:
            on_line(line)
        if VERBOSE:
            print(f"[{name}] {line}", file=sys.stderr)


class Proc:
    """A child process, killed (SIGKILL) if still running when the test ends."""

    def __init__(self, popen: subprocess.Popen, name: str) -> None:
        self.popen = popen
        self.name = name

    @property
    def pid(self) -> int:
        return self.popen.pid

    def kill9(self) -> None:
        if self.popen.poll() is None:
            os.kill(self.popen.pid, signal.SIGKILL)
        self.popen.wait()

    def term(self, timeout: float = 15.0) -> bool:
        """SIGTERM, then wait; True if it exited 0 in time (else it is killed)."""
        if self.popen.poll() is None:
            os.kill(self.popen.pid, signal.SIGTERM)
        try:
            return self.popen.wait(timeout) == 0
        except subprocess.TimeoutExpired:
            self.kill9()
            return False

    def alive(self) -> bool:
        return self.popen.poll() is None


@dataclass
class Statement:
    total: int
    calls: int
    #: "by grant" lines: key -> micro-credits ("plan" is overage).
    by_grant: Dict[str, int] = field(default_factory=dict)
    #: "by agent", "by feature", "by model" lines: key -> (micro-credits, calls).
    by_agent: Dict[str, tuple] = field(default_factory=dict)
    by_feature: Dict[str, tuple] = field(default_factory=dict)
    by_model: Dict[str, tuple] = field(default_factory=dict)
    #: Consumed past reservations, shown apart and not billed.
    overrun: int = 0
    text: str = ""


class Authority:
    """``tollgate authority`` on SQLite in ``dir``, with credentials for ``sidecars``."""

    def __init__(self, dir: Path, sidecars: Sequence[str] = ("pod-a", "pod-b")) -> None:
        dir.mkdir(parents=True, exist_ok=True)
        key = dir / "authority.key"
        subprocess.run(
            [BIN, "authority", "keygen", "--out", key], check=True, stdout=subprocess.DEVNULL
        )
        config = dir / "authority.toml"
        lines = [f'admin_token = "{ADMIN}"']
        for s in sidecars:
            lines += ["[[sidecars]]", f'name = "{s}"', f'token = "{s}-token"', f'tenants = ["{TENANT}"]']
        lines += ["[leases]", "ttl_secs = 30", "settle_grace_secs = 15", "relearn_grace_secs = 1"]
        config.write_text("\n".join(lines) + "\n")
        popen = subprocess.Popen(
            [BIN, "authority", "--store", f"sqlite://{dir / 'ledger.db'}", "--signing-key", key,
             "--listen", "127.0.0.1:0", "--http", "off", "--config", config, "--log", "warn"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )
        self.proc = Proc(popen, "authority")
        found = threading.Event()
        addr: List[str] = []

        def on_line(line: str) -> None:
            if not found.is_set() and "gRPC on " in line:
                addr.append(line.split("gRPC on ", 1)[1].split(",", 1)[0].strip())
                found.set()

        threading.Thread(target=_drain, args=(popen.stderr, "authority", on_line), daemon=True).start()
        if not found.wait(30):
            self.proc.kill9()
            raise RuntimeError("the authority did not start within 30 s")
        self.url = f"http://{addr[0]}"

    def ctl(self, *args: str) -> str:
        out = subprocess.run(
            [BIN, "ctl", "--authority", self.url, "--admin-token", ADMIN, *args],
            capture_output=True, text=True,
        )
        if out.returncode != 0:
            raise RuntimeError(f"tollgate ctl {' '.join(args)}: {out.stderr.strip()}")
        return out.stdout

    def setup_tenant(self, grant: int = 0, cap: int = 0, dir: Optional[Path] = None) -> None:
        """The tenant, the price book, a purchased grant of ``grant`` and a plan with a hard
        cap of ``cap`` (micro-credits; 0 = none)."""
        self.ctl("tenant", "create", TENANT, "--name", "python suite")
        book = (dir or Path(os.environ.get("TMPDIR", "/tmp"))) / f"prices-{os.getpid()}-{id(self)}.toml"
        book.write_text(PRICE_BOOK)
        try:
            self.ctl("price-book", "set", TENANT, "--file", str(book))
        finally:
            book.unlink()
        if grant:
            self.ctl("grant", "add", TENANT, "--kind", "purchased", "--amount", credits_arg(grant))
        if cap:
            self.ctl("plan", "set", TENANT, "--hard-cap", credits_arg(cap))

    def balance(self) -> Dict[str, int]:
        raw = self.ctl("--raw", "balance", TENANT)
        top = raw.split("grants:", 1)[0]
        return {k: int(v) for k, v in re.findall(r"(\w+): (\d+),", top)}

    def statement(self) -> Statement:
        text = self.ctl("statement", TENANT)
        m = re.search(r"statement of \S+: ([\d.]+) credits(?: charged)? over (\d+) calls", text)
        if not m:
            raise RuntimeError(f"unexpected statement: {text}")
        st = Statement(total=micro(m.group(1)), calls=int(m.group(2)), text=text)
        o = re.search(r"overrun \(not billed\) ([\d.]+)", text)
        st.overrun = micro(o.group(1)) if o else 0
        for name in ("source", "agent", "feature", "model"):
            if f"by {name}:" not in text:
                continue
            body = text.split(f"by {name}:", 1)[1].split("\nby ", 1)[0]
            for line in body.strip().splitlines()[1:]:
                # KEY (may have spaces) CREDITS CALLS ...: the key ends at the first amount.
                m = re.match(r"^(.*?)\s+(\d+\.\d{6})\s+(\d+)\b", line.strip())
                if not m:
                    continue
                key, amount, calls = m.group(1), micro(m.group(2)), int(m.group(3))
                if name == "source":
                    st.by_grant[key] = st.by_grant.get(key, 0) + amount
                else:
                    getattr(st, f"by_{name}")[key] = (amount, calls)
        return st

    def stop(self) -> bool:
        return self.proc.term()


class Sidecar:
    """``tollgate sidecar`` for pod ``id`` with its region in ``dir/id``."""

    def __init__(self, dir: Path, id: str, authority: Authority, extra: Sequence[str] = ()) -> None:
        region_dir = dir / id
        region_dir.mkdir(parents=True, exist_ok=True)
        self.region = region_dir / "region"
        self.id = id
        self.http = free_port()
        token = dir / f"{id}-token"
        token.write_text(f"{id}-token")
        popen = subprocess.Popen(
            [BIN, "sidecar", "--region", self.region, "--authority", authority.url,
             "--sidecar-id", id, "--token-file", token, "--tenants", TENANT,
             "--http", f"127.0.0.1:{self.http}", "--log", "info" if VERBOSE else "warn", *extra],
            stdout=subprocess.DEVNULL, stderr=None if VERBOSE else subprocess.DEVNULL,
        )
        self.proc = Proc(popen, f"sidecar {id}")

    def wait_ready(self, funded: bool = True, timeout: float = 30.0) -> None:
        """Until agents can use the region: tenant configured, price book published, and
        (``funded``) the first lease arrived, so a call can be reserved."""
        import tollgate

        end = time.monotonic() + timeout
        while True:
            try:
                gate = tollgate.Gate(self.region)
                gate.tenant(TENANT)
                gate.model(MODEL)
                if funded:
                    gate.reserve(cost=1, tenant=TENANT).cancel()
                return
            except tollgate.TollgateError:
                if time.monotonic() > end:
                    raise
            assert self.proc.alive(), f"sidecar {self.id} exited"
            time.sleep(0.05)

    def metrics(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.http}/metrics", timeout=2) as r:
            return r.read().decode()

    def metric(self, prefix: str) -> float:
        """The first sample whose name and labels start with ``prefix`` (0 if none)."""
        for line in self.metrics().splitlines():
            if line.startswith(prefix):
                return float(line.rsplit(" ", 1)[1])
        return 0.0

    def stop(self) -> bool:
        return self.proc.term()


@dataclass
class Report:
    calls: int = 0
    spent: int = 0
    denied: int = 0
    held: int = 0
    #: Commits started but not confirmed (a killed agent's last call): an upper bound.
    pending: int = 0
    pending_calls: int = 0
    limits: Dict[str, int] = field(default_factory=dict)

    def __iadd__(self, o: "Report") -> "Report":
        self.calls += o.calls
        self.spent += o.spent
        self.denied += o.denied
        self.held += o.held
        self.pending += o.pending
        self.pending_calls += o.pending_calls
        for k, v in o.limits.items():
            self.limits[k] = self.limits.get(k, 0) + v
        return self


class Agent:
    """A Python agent process (``agent.py``) on ``region``; see its docs for the modes."""

    def __init__(self, region: Path, out: Path, stop: Path, *, tier: str = "interactive",
                 threads: int = 1, pause_ms: int = 1, hold: int = 0, task_budget: int = 0,
                 go: Optional[Path] = None) -> None:
        self.out = out
        env = dict(os.environ, TOLLGATE_REGION=str(region))
        args = [sys.executable, str(AGENT), "--out", str(out), "--stop", str(stop),
                "--tier", tier, "--threads", str(threads), "--pause-ms", str(pause_ms),
                "--hold", str(hold), "--task-budget", str(task_budget)]
        if go is not None:
            args += ["--go", str(go)]
        self.proc = Proc(subprocess.Popen(args, env=env), f"agent {out.name}")

    def finish(self, timeout: float = 60.0) -> Report:
        code = self.proc.popen.wait(timeout)
        assert code == 0, f"agent {self.out.name} exited with {code}"
        return self.report()

    def report(self) -> Report:
        """The agent's totals: its final report, or (killed) its journal of commits."""
        final = self.out.with_suffix(".report")
        if final.exists():
            return _parse_report(final.read_text())
        return _read_journal(self.out)

    def wait_held(self, timeout: float = 30.0) -> int:
        """Hold mode: waits until the agent holds its reservations; their amount."""
        final = self.out.with_suffix(".held")
        end = time.monotonic() + timeout
        while not final.exists():
            assert self.proc.alive(), f"agent {self.out.name} exited"
            assert time.monotonic() < end, "the agent never held its reservations"
            time.sleep(0.02)
        return int(final.read_text())


def _parse_report(text: str) -> Report:
    r = Report()
    for kv in text.split():
        k, _, v = kv.partition("=")
        if k.startswith("limit:"):
            r.limits[k[6:]] = int(v)
        elif hasattr(r, k):
            setattr(r, k, int(v))
    return r


def _read_journal(out: Path) -> Report:
    """Each journal line is ``+ THREAD MOST`` (a commit about to start, at most MOST) or
    ``= THREAD CHARGE`` (confirmed); a thread's ``+`` with no ``=`` was cut by the kill."""
    r = Report()
    open_most: Dict[str, int] = {}
    path = out.with_suffix(".journal")
    if path.exists():
        for line in path.read_text().splitlines():
            kind, thread, amount = line.split()
            if kind == "+":
                open_most[thread] = int(amount)
            else:
                r.calls += 1
                r.spent += int(amount)
                open_most.pop(thread, None)
    r.pending = sum(open_most.values())
    r.pending_calls = len(open_most)
    return r


def region_totals(region: Path) -> Dict[str, int]:
    """The region's audit summed over its pools (with the sidecar stopped), like the Rust
    suite's ``region_totals``: ``balanced`` (0/1), granted, consumed, returned, left,
    overrun, held."""
    import tollgate._native as native

    a = native._region_audit(region)
    assert a["balanced"], a["error"]
    pools = a["pools"]
    return {
        "granted": sum(p["granted"] for p in pools),
        "consumed": sum(p["consumed"] for p in pools),
        "returned": sum(p["returned"] for p in pools),
        "left": sum(p["available"] + p["carved"] for p in pools),
        "overrun": sum(p["overrun"] for p in pools),
        "held": a["held"],
    }


def wait_until(cond, timeout: float, what: str, every: float = 0.05):
    end = time.monotonic() + timeout
    while True:
        v = cond()
        if v:
            return v
        assert time.monotonic() < end, f"timed out after {timeout} s waiting for {what}"
        time.sleep(every)


UPSTREAM_BIN = Path(os.environ.get("LLM_UPSTREAM_BIN", str(TARGET / "debug" / "llm-upstream")))


class Upstream:
    """``llm-upstream``: a local server speaking the OpenAI and Anthropic wire formats
    (streams and usage chunks included), for the real SDKs to talk to."""

    def __init__(self, dir: Path) -> None:
        port_file = dir / "upstream.port"
        popen = subprocess.Popen([UPSTREAM_BIN, "--port-file", port_file],
                                 stdout=subprocess.DEVNULL, stderr=None if VERBOSE else subprocess.DEVNULL)
        self.proc = Proc(popen, "llm-upstream")
        port = wait_until(lambda: port_file.exists() and port_file.read_text().strip(), 30,
                          "llm-upstream to listen")
        self.url = f"http://127.0.0.1:{port}"

    def requests(self) -> list:
        import json

        with urllib.request.urlopen(f"{self.url}/_upstream/requests", timeout=5) as r:
            return json.loads(r.read())


def sdk_charge(input_tokens: int, output_tokens: int) -> int:
    """What the price book charges the SDK models: 0.15 / 0.60 credits per million tokens."""
    return -(-(input_tokens * 150_000 + output_tokens * 600_000) // 1_000_000)

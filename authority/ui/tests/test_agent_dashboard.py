"""The dashboard while an agent spends: a real authority, a real `tollgate sidecar`, and
`tollgate gateway` in front of `llm-upstream` (the project's OpenAI-compatible test server),
called over HTTP by the test as an agent would. What a finance user sees in headless
Chromium: a cap lowered in the page stops the agent's calls (once the pod has served what
its lane already held) and shows up as denials by limit, every served call accounted for;
and the projected depletion moves earlier when the agent calls faster."""

import json
import os
import re
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request

import pytest
from playwright.sync_api import expect

from conftest import ADMIN, WAIT_MS, Authority, free_port, sign_in

C = 1_000_000
MODEL = "m1"
TENANTS = ("capped", "burner")
KEYS = {"gk-capped": "capped", "gk-burner": "burner"}
# Bounds a wait for the stack (the sidecar's reports, the page's polls); it times nothing.
LIVE_S = 60
# m1's price: 1,000 micro-credits a token, in and out (a call of ~10 tokens: 0.01 credits).
PRICE_PER_TOKEN = 1000
# What an active pod may still serve after a cap is lowered to below the month's spend: its
# lane's allowance, carved under the old cap (at most twice the lane's minimum target of
# 0.2 credits at this burn, sidecar/src/lease.rs), plus one call in flight.
LANE_BOUND = 400_000 + 70 * PRICE_PER_TOKEN
# Calls the test makes after lowering the cap before it gives up waiting for a refusal:
# more than LANE_BOUND pays for.
MAX_CALLS_AFTER_CAP = 100


def credits(m):
    """Micro-credits as the page writes them (app.js credits())."""
    whole, frac = divmod(m, C)
    return f"{whole:,}" + (f".{frac:06d}".rstrip("0") if frac else "")


def micro(shown):
    """The page's credits ("1,234.5") as micro-credits, exactly; None for anything else."""
    m = re.fullmatch(r"(\d{1,3}(?:,\d{3})*)(?:\.(\d{1,6}))?", shown.strip())
    if not m:
        return None
    return int(m.group(1).replace(",", "")) * C + int((m.group(2) or "").ljust(6, "0"))


def wait_for(cond, what, timeout=LIVE_S):
    end = time.monotonic() + timeout
    while True:
        v = cond()
        if v:
            return v
        assert time.monotonic() < end, f"gave up waiting for {what}"
        time.sleep(0.1)


class Stack:
    """Child processes in one temporary directory, stopped in reverse order."""

    def __init__(self):
        self.tmp = tempfile.TemporaryDirectory(prefix="tollgate-ui-agent-")
        self.dir = self.tmp.name
        self.bin = os.environ["TOLLGATE_BIN"]
        self.procs = []

    def spawn(self, name, args):
        log = open(os.path.join(self.dir, f"{name}.log"), "w")
        p = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
        self.procs.append((name, p, log))
        return p

    def log(self, name):
        with open(os.path.join(self.dir, f"{name}.log")) as f:
            return f.read()

    def wait_file(self, path, proc, name):
        def ready():
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited: {self.log(name)}")
            if os.path.exists(path):
                with open(path) as f:
                    return f.read().strip()
            return None
        return wait_for(ready, f"{name} to start")

    def stop(self):
        for _, p, log in reversed(self.procs):
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
            log.close()
        self.tmp.cleanup()

    def chat(self, key, max_tokens=4):
        """One chat completion through the gateway, as an agent makes it: (status, body)."""
        req = urllib.request.Request(
            self.gateway + "/v1/chat/completions",
            data=json.dumps({"model": MODEL, "max_tokens": max_tokens, "messages": [
                {"role": "user", "content": "what does this ticket cost"}]}).encode(),
            headers={"content-type": "application/json", "authorization": f"Bearer {key}"},
            method="POST",
        )
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                return r.status, json.load(r)
        except urllib.error.HTTPError as e:
            return e.code, json.load(e)


def start(s):
    # The authority: gRPC for the sidecar and the gateway's admin client, HTTP for the page.
    key = os.path.join(s.dir, "authority.key")
    subprocess.run([s.bin, "authority", "keygen", "--out", key], check=True,
                   stdout=subprocess.DEVNULL)
    cfg = os.path.join(s.dir, "authority.toml")
    tenants = ", ".join(f'"{t}"' for t in TENANTS)
    with open(cfg, "w") as f:
        f.write(f'admin_token = "{ADMIN}"\n'
                f'[[sidecars]]\nname = "pod-a"\ntoken = "pod-a-token"\ntenants = [{tenants}]\n'
                "[leases]\nttl_secs = 30\nsettle_grace_secs = 15\nrelearn_grace_secs = 1\n")
    grpc, http = free_port(), free_port()
    a = s.spawn("authority", [
        s.bin, "authority", "--store", f"sqlite://{s.dir}/ledger.db", "--signing-key", key,
        "--listen", f"127.0.0.1:{grpc}", "--http", f"127.0.0.1:{http}", "--config", cfg,
        "--log", "info"])
    base = f"http://127.0.0.1:{http}"

    def healthy():
        if a.poll() is not None:
            raise RuntimeError("authority exited: " + s.log("authority"))
        try:
            with urllib.request.urlopen(base + "/healthz", timeout=1):
                return True
        except OSError:
            return False
    wait_for(healthy, "the authority's /healthz")
    s.authority = Authority(base)

    # Tenants, priced so a call is visible in credits.
    for t in TENANTS:
        s.authority.ok("CreateTenant", {"tenant": t, "display_name": t})
        s.authority.ok("SetPriceBook", {"price_book": {"tenant": t, "models": [
            {"model": MODEL, "tokens": {"input_per_mtok_micro": PRICE_PER_TOKEN * C,
                                        "output_per_mtok_micro": PRICE_PER_TOKEN * C}}]}})
    # "capped" pays from its plan only (no grants): the hard cap is what it may spend.
    s.authority.ok("SetPlan", {"plan": {"tenant": "capped", "hard_cap_micro": 100 * C}})
    # "burner" holds a purchased grant: depletion is that grant running out.
    s.authority.ok("AddGrant", {"grant": {"tenant": "burner", "kind": "GRANT_KIND_PURCHASED",
                                          "amount_micro": 1000 * C, "label": "po-7"}})

    # The sidecar, as a pod runs it (token file, its tenants, a region for the gateway).
    os.makedirs(os.path.join(s.dir, "pod"))
    region = os.path.join(s.dir, "pod", "region")
    token = os.path.join(s.dir, "pod-a.token")
    with open(token, "w") as f:
        f.write("pod-a-token")
    s.spawn("sidecar", [
        s.bin, "sidecar", "--region", region, "--authority", f"http://127.0.0.1:{grpc}",
        "--sidecar-id", "pod-a", "--token-file", token, "--tenants", ",".join(TENANTS),
        "--http", f"127.0.0.1:{free_port()}", "--log", "info"])

    # llm-upstream, then the gateway in front of it on the sidecar's region.
    up_port = os.path.join(s.dir, "upstream.port")
    up = s.spawn("upstream", [os.environ["LLM_UPSTREAM_BIN"], "--port-file", up_port])
    up_url = f"http://127.0.0.1:{s.wait_file(up_port, up, 'upstream')}"
    up_key = os.path.join(s.dir, "upstream.key")
    with open(up_key, "w") as f:
        f.write("up-secret\n")
    lines = ["default_max_output_tokens = 64", "[[upstreams]]", 'models = ["*"]',
             f'base_url = "{up_url}"', f'api_key_file = "{up_key}"']
    for k, t in KEYS.items():
        lines += ["[[keys]]", f'key = "{k}"', f'tenant = "{t}"', f'agent = "{t}-bot"']
    gcfg = os.path.join(s.dir, "gateway.toml")
    with open(gcfg, "w") as f:
        f.write("\n".join(lines) + "\n")
    gw_port = os.path.join(s.dir, "gateway.port")
    gw = s.spawn("gateway", [
        s.bin, "gateway", "--config", gcfg, "--region", region, "--listen", "127.0.0.1:0",
        "--port-file", gw_port, "--log", "info",
        # One worker: one lane per key, so no budget sits in another worker's lane.
        "--threads", "1"])
    s.gateway = f"http://127.0.0.1:{s.wait_file(gw_port, gw, 'gateway')}"


@pytest.fixture(scope="module")
def stack():
    if not os.environ.get("LLM_UPSTREAM_BIN"):
        pytest.skip("LLM_UPSTREAM_BIN not set (run.sh sets it)")
    s = Stack()
    try:
        start(s)
        yield s
    finally:
        s.stop()


def text(page, sel):
    return page.locator(sel).inner_text()


def charge(body):
    """What a served call costs: m1's price times the usage the upstream reported."""
    u = body["usage"]
    return (u["prompt_tokens"] + u["completion_tokens"]) * PRICE_PER_TOKEN


def test_a_cap_lowered_in_the_page_denies_the_agents_calls(stack, page):
    # The agent works: calls go through (the first waits for the sidecar's lease).
    served = []

    def call():
        status, body = stack.chat("gk-capped")
        if status == 200:
            served.append(charge(body))
        return status, body

    wait_for(lambda: call()[0] == 200, "the first call through the gateway")
    for _ in range(4):
        status, body = call()
        assert status == 200, body

    sign_in(page, stack.authority, ADMIN)
    page.select_option("#tenant-select", "capped")
    expect(page.locator("#cap-current")).to_have_text("100", timeout=WAIT_MS)
    # Every served call reaches the page's month once the sidecar settled it.
    expect(page.locator("#period-spent")).to_have_text(credits(sum(served)),
                                                       timeout=LIVE_S * 1000)
    expect(page.locator("#denials tbody tr")).to_have_count(0)
    spent_before = sum(served)

    # A person lowers the hard cap below what was spent this month.
    page.fill("#cap", "0.001")
    page.click("#cap-save")
    expect(page.locator("#cap-status")).to_have_text("cap set to 0.001", timeout=WAIT_MS)
    expect(page.locator("#cap-current")).to_have_text("0.001", timeout=WAIT_MS)
    expect(page.locator("#available")).to_have_text("0", timeout=WAIT_MS)

    # The agent keeps calling. The pod may still serve what its lane already held under the
    # old cap (an active lane keeps at most twice its target allowance, 0.2 credits at this
    # burn: sidecar/src/lease.rs), then the gateway refuses, naming the tenant's limit.
    for _ in range(MAX_CALLS_AFTER_CAP):
        status, body = call()
        if status != 200:
            break
    assert status == 429, body
    msg = body["error"]["message"]
    assert msg.startswith("tollgate: denied by the ") and "capped" in msg, msg
    after_cap = sum(served) - spent_before
    assert after_cap <= LANE_BOUND, (after_cap, len(served))
    # And stays refused.
    for _ in range(3):
        status, body = call()
        assert status == 429, body

    # The page shows the denials by their limit (the tenant's wallet, under its cap).
    row = page.locator("#denials tbody tr").first
    expect(row).to_contain_text("capped/wallet", timeout=LIVE_S * 1000)
    expect(row.locator("td").nth(1)).to_have_text("interactive")
    assert int(row.locator("td").nth(2).inner_text()) >= 1
    # Every call the agent was served is on the page, to the micro-credit: billed this month,
    # or, what the pod served from lane allowances whose holds the lowered cap took back,
    # shown apart as used past holds (not billed). A refused call costs nothing.

    def settled():
        spent, over = micro(text(page, "#period-spent")), micro(text(page, "#overrun"))
        ok = spent is not None and over is not None and spent + over == sum(served)
        return (spent, over) if ok else None
    spent, over = wait_for(settled, "the served calls on the page")
    assert spent >= spent_before and over <= LANE_BOUND, (spent, over, spent_before)
    expect(page.locator("#cap-current")).to_have_text("0.001")
    print(f"capped: {len(served)} calls served ({after_cap} micro-credits after the cap "
          f"change); denial row: {row.inner_text()!r}")


def test_the_depletion_date_moves_earlier_when_the_agent_calls_faster(stack, page):
    wait_for(lambda: stack.chat("gk-burner")[0] == 200, "the first call through the gateway")
    stop = threading.Event()
    errors = []

    def agent(pause):
        while not stop.is_set():
            status, body = stack.chat("gk-burner")
            if status != 200:
                errors.append((status, body))
                return
            if pause:
                stop.wait(pause)

    sign_in(page, stack.authority, ADMIN)
    page.select_option("#tenant-select", "burner")
    expect(page.locator("#available")).not_to_have_text("–", timeout=WAIT_MS)
    slow = threading.Thread(target=agent, args=(0.5,), daemon=True)
    slow.start()
    fast = []
    try:
        # A slow agent: the page projects a depletion date from the last hour's burn.
        date = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d UTC$")
        expect(page.locator("#depletion")).to_have_text(date, timeout=LIVE_S * 1000)
        # ... once the slow agent's own calls are in the burn the page shows.
        first = micro(text(page, "#burn1h"))
        wait_for(lambda: (micro(text(page, "#burn1h")) or 0) > first, "the slow agent's burn")
        before = text(page, "#depletion")
        burn_before = text(page, "#burn1h")
        assert date.match(before), before

        # Eight agents calling back to back: the page's projection moves earlier.
        fast = [threading.Thread(target=agent, args=(0,), daemon=True) for _ in range(8)]
        for t in fast:
            t.start()

        def earlier():
            d = text(page, "#depletion")
            # "YYYY-MM-DD HH:MM UTC" orders as text.
            return d if date.match(d) and d < before else None
        after = wait_for(earlier, "the projected depletion to move earlier")
        assert not errors, errors
        print(f"depletion {before} -> {after}; burn/h {burn_before} -> {text(page, '#burn1h')}")
    finally:
        stop.set()
        for t in [slow, *fast]:
            t.join(timeout=30)
    assert not errors, errors

"""Starts a real Tollgate authority (the `tollgate` binary, its authority role) on free
loopback ports with a temporary SQLite store, for the dashboard and API tests."""

import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request

import pytest
from playwright.sync_api import expect, sync_playwright

ADMIN = "ui-test-admin-token"
READER_ACME = "ui-test-reader-acme"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Authority:
    def __init__(self, base):
        self.base = base

    def call(self, method, body=None, token=ADMIN):
        """POSTs to the admin API: (HTTP status, JSON reply)."""
        req = urllib.request.Request(
            f"{self.base}/v1/admin/{method}",
            data=json.dumps(body or {}).encode(),
            headers={"content-type": "application/json"},
            method="POST",
        )
        if token:
            req.add_header("authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                return r.status, json.load(r)
        except urllib.error.HTTPError as e:
            return e.code, json.load(e)

    def ok(self, method, body=None, token=ADMIN):
        status, reply = self.call(method, body, token)
        assert status == 200, (method, status, reply)
        return reply


@pytest.fixture(scope="module")
def authority():
    binary = os.environ["TOLLGATE_BIN"]
    tmp = tempfile.TemporaryDirectory(prefix="tollgate-ui-")
    cfg = os.path.join(tmp.name, "authority.toml")
    with open(cfg, "w") as f:
        f.write(
            f'admin_token = "{ADMIN}"\n'
            f'[[readers]]\ntoken = "{READER_ACME}"\ntenants = ["acme"]\n'
        )
    http = free_port()
    log = open(os.path.join(tmp.name, "authority.log"), "w")
    proc = subprocess.Popen(
        [
            binary, "authority",
            "--store", f"sqlite://{tmp.name}/tollgate.db",
            "--listen", f"127.0.0.1:{free_port()}",
            "--http", f"127.0.0.1:{http}",
            "--config", cfg,
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{http}"
    # Wait for /healthz (the process may also die: then say why).
    for _ in range(600):
        if proc.poll() is not None:
            log.flush()
            raise RuntimeError("authority exited: " + open(log.name).read())
        try:
            with urllib.request.urlopen(base + "/healthz", timeout=1):
                break
        except OSError:
            time.sleep(0.1)
    else:
        proc.kill()
        raise RuntimeError("authority did not answer /healthz")
    yield Authority(base)
    proc.terminate()
    proc.wait(timeout=30)
    log.close()
    tmp.cleanup()



# ---- The browser: real headless Chromium (Debian's), driven by Playwright. ----
CHROMIUM = os.environ.get("TOLLGATE_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
# Generous: the page polls every second; this bounds a wait, it times nothing.
WAIT_MS = 15_000


@pytest.fixture(scope="module")
def browser():
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield b
        b.close()


@pytest.fixture
def page(browser):
    ctx = browser.new_context(viewport={"width": 1366, "height": 900})
    pg = ctx.new_page()
    errors = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    yield pg
    ctx.close()
    assert not errors, errors


def sign_in(page, authority, token, tenant=""):
    page.goto(authority.base + "/ui")
    page.fill("#token", token)
    page.fill("#login-tenant", tenant)
    page.click("#login")
    expect(page.locator("#app")).to_be_visible(timeout=WAIT_MS)

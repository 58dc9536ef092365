"""The dashboard on live traffic: `tollgate demo --keep` (the real authority, two sidecars
and an agent fleet) in headless Chromium: burn and a projected depletion date appear as the
fleet spends, spend by agent/model/task and denials by limit and tier fill in, the audit chain
verifies, and the numbers agree with the authority's statement."""

import os
import re
import subprocess
import tempfile
import time

from playwright.sync_api import expect

from conftest import WAIT_MS

DEMO_TOKEN = "demo-admin-token"


def test_the_dashboard_follows_a_running_fleet(page):
    log = tempfile.NamedTemporaryFile("w+", prefix="tollgate-demo-", suffix=".log")
    proc = subprocess.Popen(
        [os.environ["TOLLGATE_BIN"], "demo", "--duration", "8s", "--agents", "6",
         "--every", "1", "--http", "127.0.0.1:0", "--keep"],
        stdout=log, stderr=subprocess.STDOUT, text=True,
    )
    try:
        url = None
        for _ in range(600):
            log.seek(0)
            m = re.search(r"dashboard: (http://\S+/ui)", log.read())
            if m:
                url = m.group(1)
                break
            assert proc.poll() is None, "the demo exited early"
            time.sleep(0.1)
        assert url, "the demo printed no dashboard URL"

        page.goto(url)
        page.fill("#token", DEMO_TOKEN)
        page.click("#login")
        expect(page.locator("#who")).to_have_text("tenant acme", timeout=WAIT_MS)
        # While the fleet burns: a burn rate and a projected depletion date.
        expect(page.locator("#depletion")).to_have_text(
            re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d UTC$"), timeout=WAIT_MS)
        expect(page.locator("#burn1h")).not_to_have_text("0")
        expect(page.locator("#by-agent tbody")).to_contain_text("support-bot", timeout=WAIT_MS)
        expect(page.locator("#by-model tbody tr").first).to_be_visible()
        expect(page.locator("#by-task tbody tr").first).to_be_visible()
        # Denials fill in: by the limit that bound them, or "(lane ran dry)" for calls denied
        # while a lane waited for a refill before any limit was named.
        expect(page.locator("#denials tbody tr").first).to_be_visible(timeout=WAIT_MS)
        expect(page.locator("#audit")).to_have_text("verified", timeout=WAIT_MS)
        # The per-day chart has today's spend (the last of its 14 days).
        expect(page.locator("#daily")).to_have_attribute(
            "data-totals", re.compile(r"^(\d+,){13}[1-9]\d*$"), timeout=WAIT_MS)

        # After the run the authority keeps serving: the page agrees with its statement.
        for _ in range(1200):
            log.seek(0)
            out = log.read()
            if "--keep:" in out:
                break
            assert proc.poll() is None, "the demo failed:\n" + out
            time.sleep(0.1)
        assert "every call posted once" in out, out
        m = re.search(r"total [\d.]+ cr[^\n]*? in (\d+) calls", out)
        assert m, out
        calls = int(m.group(1))
        # The by-agent table's calls add up to the statement's.
        def agent_calls():
            return sum(int(c) for c in page.locator("#by-agent tbody tr td:nth-child(3)").all_text_contents())
        deadline = time.monotonic() + WAIT_MS / 1000
        while agent_calls() != calls and time.monotonic() < deadline:
            page.wait_for_timeout(200)
        assert agent_calls() == calls
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()

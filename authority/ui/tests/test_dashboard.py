"""The finance dashboard in real headless Chromium (Debian's `chromium`, driven by
Playwright), against a real authority: what a finance user sees."""

import os

from playwright.sync_api import expect

from conftest import ADMIN, READER_ACME, WAIT_MS, sign_in

C = 1_000_000


def book(authority, tenant):
    # m1: 2 micro-credits per input token, 8 per output token.
    authority.ok("SetPriceBook", {"price_book": {"tenant": tenant, "models": [
        {"model": "m1", "tokens": {"input_per_mtok_micro": 2 * C, "output_per_mtok_micro": 8 * C}},
    ]}})


def test_balance_grant_cap_and_estimate(authority, page):
    authority.ok("CreateTenant", {"tenant": "acme", "display_name": "Acme"})
    authority.ok("CreateTenant", {"tenant": "capco", "display_name": "Capped"})
    book(authority, "acme")
    book(authority, "capco")

    sign_in(page, authority, ADMIN)
    page.select_option("#tenant-select", "acme")
    expect(page.locator("#available")).to_have_text("0", timeout=WAIT_MS)
    expect(page.locator("#audit")).to_have_text("verified", timeout=WAIT_MS)

    # A grant made elsewhere shows up on the open page (it polls).
    authority.ok("AddGrant", {"grant": {"tenant": "acme", "kind": "GRANT_KIND_PURCHASED",
                                        "amount_micro": 100 * C, "label": "invoice-42"}})
    expect(page.locator("#available")).to_have_text("100", timeout=WAIT_MS)
    row = page.locator("#grants tbody tr").first
    expect(row).to_contain_text("invoice-42")
    expect(row).to_contain_text("purchased")
    expect(page.locator("#depletion")).to_have_text("not projected")

    # How much will 1,000 calls a day of 1,000 in / 500 out tokens cost for 30 days?
    # 6,000 micro-credits a call: 6 credits a day, 180 in all; 100 credits last 16 days
    # and day 17 cannot be paid in full.
    page.fill("#est-model", "m1")
    page.fill("#est-calls", "1000")
    page.fill("#est-in", "1000")
    page.fill("#est-out", "500")
    page.fill("#est-days", "30")
    page.click("#est-run")
    expect(page.locator("#est-total")).to_have_text("180 credits", timeout=WAIT_MS)
    expect(page.locator("#est-per-day")).to_have_text("6")
    expect(page.locator("#est-limit")).to_contain_text("Stops on day 17")
    expect(page.locator("#est-limit")).to_contain_text("at the balance: 80 credits would be denied")
    expect(page.locator("#est-runway")).to_contain_text("16 day(s)")
    expect(page.locator("#est-grants tbody tr").first).to_contain_text("invoice-42")

    # capco has no grants, only a plan: its cap is what it may spend. Setting the cap in
    # the page changes what the authority enforces.
    authority.ok("SetPlan", {"plan": {"tenant": "capco", "hard_cap_micro": 50 * C}})
    page.select_option("#tenant-select", "capco")
    expect(page.locator("#cap-current")).to_have_text("50", timeout=WAIT_MS)
    expect(page.locator("#available")).to_have_text("50", timeout=WAIT_MS)
    page.fill("#cap", "1.5")
    page.click("#cap-save")
    expect(page.locator("#cap-status")).to_have_text("cap set to 1.5", timeout=WAIT_MS)
    expect(page.locator("#cap-current")).to_have_text("1.5", timeout=WAIT_MS)
    expect(page.locator("#available")).to_have_text("1.5", timeout=WAIT_MS)
    plan = authority.ok("GetPlan", {"tenant": "capco"})
    assert plan["hard_cap_micro"] == 1_500_000
    # The next day's workload (6 credits) no longer fits: the ledger stops it at the cap.
    est = authority.ok("Estimate", {"tenant": "capco", "days": 1, "per_day": True, "lines": [
        {"model": "m1", "calls": 1000, "input_tokens_per_call": 1000, "output_tokens_per_call": 500}]})
    assert (est["hits_limit"], est["limit"], est["limit_day"]) == (True, "hard_cap", 1)
    assert est["plan_funded_micro"] == 1_500_000
    assert est["unfunded_micro"] == 4_500_000
    page.click("#est-run")
    expect(page.locator("#est-limit")).to_contain_text("Stops on day 1", timeout=WAIT_MS)
    expect(page.locator("#est-limit")).to_contain_text("at the hard cap")

    shot = os.environ.get("TOLLGATE_UI_SCREENSHOT")
    if shot:
        page.select_option("#tenant-select", "acme")
        expect(page.locator("#available")).to_have_text("100", timeout=WAIT_MS)
        page.screenshot(path=shot, full_page=True)


def test_a_reader_token_sees_its_tenant_and_cannot_change_caps(authority, page):
    # The admin test above may or may not have run first (pytest -k): make sure acme exists.
    status, _ = authority.call("CreateTenant", {"tenant": "acme"})
    assert status in (200, 409)
    page.goto(authority.base + "/ui")
    page.fill("#token", "not-a-token")
    page.click("#login")
    expect(page.locator("#login-error")).to_have_text("unknown token", timeout=WAIT_MS)

    sign_in(page, authority, READER_ACME, "acme")
    expect(page.locator("#who")).to_have_text("tenant acme")
    expect(page.locator("#audit")).to_have_text("verified", timeout=WAIT_MS)
    page.fill("#cap", "10")
    page.click("#cap-save")
    expect(page.locator("#cap-status")).to_contain_text("needs the admin token", timeout=WAIT_MS)
    # The token lives in this tab's sessionStorage only.
    assert page.evaluate("sessionStorage.getItem('tollgate.token')") == READER_ACME
    assert page.evaluate("localStorage.length") == 0
    page.click("#logout")
    expect(page.locator("#login-view")).to_be_visible()
    assert page.evaluate("sessionStorage.getItem('tollgate.token')") is None

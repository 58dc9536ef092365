"""Python agent fleets against the real system: denials with their limits, tier floors,
a hard cap reached by two pods of Python agents, and ``kill -9`` of Python agents in the
middle of their calls, with exact conservation afterwards (as the Rust e2e suite checks)."""

from __future__ import annotations

import gc
import time
from pathlib import Path

import tollgate
from harness import CREDIT, MODEL, TENANT, Agent, Report, region_totals, wait_until


def test_a_tier_quota_denies_background_calls_with_its_limit(pod) -> None:
    auth, sc = pod
    # Background calls may spend 0.002 credits a minute; interactive ones are not limited.
    auth.ctl("quota", "set", TENANT, "bg-per-minute", "--window", "minute", "--max", "0.002",
             "--tier", "background")
    # A new limit binds the lanes carved after it reaches the pod: wait for the push (the
    # sidecar's metrics list the limit once it serves it).
    wait_until(lambda: f'limit="{TENANT}/tier/background/minute"' in sc.metrics(), 20,
               "the sidecar to serve the new quota")
    gate = tollgate.Gate(sc.region, tenant=TENANT)
    spent = 0

    def background_denial() -> tollgate.Denied:
        nonlocal spent
        try:
            spent += gate.reserve(MODEL, tier="background", input_tokens=100,
                                  max_output_tokens=100).commit(100, 100)
        except tollgate.Denied as d:
            if d.limit == "tier_window":
                return d
        return None

    d = wait_until(background_denial, 20, "a background call denied by the tier quota", every=0.01)
    assert d.horizon == "minute" and d.tier == "background" and d.needed == 200
    # Until the window ends (a minute at most), longer for lower tiers (x4 for background,
    # plus jitter).
    assert 0 < d.retry_after <= 600
    assert "background tier per-minute quota" in str(d)
    assert spent <= 2_000 + 200, "the quota let more through than its window"
    # Interactive work is not under that quota.
    for _ in range(20):
        gate.reserve(MODEL, input_tokens=100, max_output_tokens=100).commit(100, 100)


def test_near_the_floor_background_is_denied_while_interactive_passes(system, tmp_path: Path,
                                                                       out_dir: Path) -> None:
    # A small wallet; background work must leave half of each pool to interactive work.
    auth, (sc,) = system(grant=CREDIT, sidecar_args=["--tier-floors", "0,0,500"])
    stop, go = tmp_path / "stop", tmp_path / "go"
    bg = Agent(sc.region, out_dir / "bg", stop, tier="background", threads=2, go=go)
    fg = Agent(sc.region, out_dir / "fg", stop, tier="interactive", threads=2, go=go)
    time.sleep(1)  # both started, then both go at once
    go.write_text("go")

    def spent_out() -> bool:
        b = auth.balance()
        return b["available_micro"] == 0 and b["consumed_micro"] + 2_000 >= CREDIT

    try:
        wait_until(spent_out, 30, "the wallet to be spent", every=0.3)
    finally:
        floor_bg = sc.metric('tollgate_sidecar_denials_total{reason="tier_floor",tier="background"}')
        floor_fg = sc.metric('tollgate_sidecar_denials_total{reason="tier_floor",tier="interactive"}')
        stop.write_text("stop")
    b, f = bg.finish(), fg.finish()
    assert sc.stop()
    st = auth.statement()
    assert floor_bg > 0, "background work was never stopped by its floor"
    assert floor_fg == 0, "interactive work is never stopped by a floor"
    assert f.spent > b.spent, "interactive work got less than background work"
    assert (st.calls, st.total) == (b.calls + f.calls, b.spent + f.spent)


def test_a_python_fleet_in_two_pods_never_passes_the_hard_cap(system, tmp_path: Path,
                                                             out_dir: Path) -> None:
    grant, cap = CREDIT // 5, CREDIT * 3 // 10
    auth, pods = system(grant=grant, cap=cap, pods=("pod-a", "pod-b"))
    stop = tmp_path / "stop"
    tiers = ["interactive", "scheduler", "background"]
    agents = [
        Agent(sc.region, out_dir / f"{sc.id}-{i}", stop, tier=tiers[(p + i) % 3], threads=2)
        for p, sc in enumerate(pods)
        for i in range(2)
    ]

    def budget_gone() -> bool:
        b = auth.balance()
        return b["available_micro"] == 0 and b["consumed_micro"] + 20_000 >= grant + cap

    try:
        wait_until(budget_gone, 40, "the fleet to spend the grant and the cap", every=0.3)
        time.sleep(1)  # denied for a while
    finally:
        stop.write_text("stop")
    fleet = Report()
    for a in agents:
        fleet += a.finish()
    for sc in pods:
        assert sc.stop(), f"{sc.id} did not stop cleanly"
    st = auth.statement()
    overage = st.by_grant.get("plan", 0)
    regions = [region_totals(sc.region) for sc in pods]
    # Every committed call was posted once; the regions spent exactly what the ledger posted.
    assert (st.calls, st.total) == (fleet.calls, fleet.spent)
    assert sum(r["consumed"] for r in regions) == st.total
    assert sum(r["left"] for r in regions) == 0 and sum(r["held"] for r in regions) == 0
    # The fleet was stopped by the budget, and never went past it.
    assert fleet.denied > 0
    assert overage <= cap, f"overage {overage} past the hard cap {cap}"
    assert st.total <= grant + cap
    wait_until(lambda: auth.balance()["held_micro"] == 0, 10, "the leases to settle")
    assert auth.balance()["consumed_micro"] == st.total


def test_kill9_of_python_agents_mid_call_conserves_every_credit(system, tmp_path: Path,
                                                                out_dir: Path) -> None:
    """Agents spend most of each call between reserve and commit (20 ms "in the model"),
    so a ``kill -9`` lands mid-call: their holds are reclaimed by the sidecar, their
    committed calls are still posted, and nothing is created or lost."""
    auth, (sc,) = system(sidecar_args=["--liveness-timeout-ms", "1000"])
    stop = tmp_path / "stop"
    agents = [Agent(sc.region, out_dir / f"agent-{i}", stop, threads=2, pause_ms=20)
              for i in range(4)]
    time.sleep(2)
    killed, survivors = agents[:2], agents[2:]
    for a in killed:
        a.proc.kill9()
    wait_until(lambda: sc.metric("tollgate_sidecar_processes_reclaimed_total") >= 2, 15,
               "the killed agents' lanes to be reclaimed")
    time.sleep(0.5)
    stop.write_text("stop")
    done = Report()
    for a in survivors:
        done += a.finish()
    dead = Report()
    for a in killed:
        dead += a.report()
    assert dead.calls > 0 and done.calls > 0
    gc.collect()
    assert sc.stop()
    st = auth.statement()
    r = region_totals(sc.region)
    # The region balances, holds nothing, and spent exactly what the ledger posted.
    assert r["held"] == 0 and r["left"] == 0
    assert r["consumed"] == st.total
    # The ledger has every confirmed commit, and at most the one commit per killed thread
    # that the kill cut between its start and its confirmation.
    assert done.calls + dead.calls <= st.calls <= done.calls + dead.calls + dead.pending_calls
    assert done.spent + dead.spent <= st.total <= done.spent + dead.spent + dead.pending
    wait_until(lambda: auth.balance()["held_micro"] == 0, 10, "the leases to settle")
    assert auth.balance()["consumed_micro"] == st.total


def test_kill9_of_python_agents_holding_reservations_reclaims_them(system, tmp_path: Path,
                                                                   out_dir: Path) -> None:
    auth, (sc,) = system(sidecar_args=["--liveness-timeout-ms", "1000"])
    agents = [Agent(sc.region, out_dir / f"holder-{i}", tmp_path / "never", hold=5) for i in range(2)]
    held = sum(a.wait_held() for a in agents)
    assert held == 2 * 5 * 1_000
    for a in agents:
        a.proc.kill9()
    wait_until(lambda: sc.metric("tollgate_sidecar_processes_reclaimed_total") >= 2, 15,
               "the killed holders' lanes to be reclaimed")
    assert sc.metric("tollgate_sidecar_reclaimed_micro_credits_total") >= held
    assert sc.stop()
    r = region_totals(sc.region)
    assert r["held"] == 0 and r["consumed"] == 0 and r["left"] == 0
    assert auth.statement().calls == 0

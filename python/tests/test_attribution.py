"""Attribution from Python: the agent's name (per process and per call), features,
outcomes (with a call's usage and on their own) reach the ledger's statement."""

from __future__ import annotations

import gc

import pytest

import tollgate
from harness import MODEL, TENANT


def test_agents_features_and_outcomes_reach_the_statement(pod, monkeypatch: pytest.MonkeyPatch) -> None:
    auth, sc = pod
    monkeypatch.setenv("TOLLGATE_AGENT", "env-bot")
    assert tollgate.Gate(sc.region).agent_name == "env-bot"
    gate = tollgate.Gate(sc.region, agent="support-bot", tenant=TENANT)
    assert gate.agent_name == "support-bot"
    summarize, triage = gate.feature("summarize"), gate.agent("triage-bot")
    assert (summarize.name, triage.name) == ("summarize", "triage-bot")

    spent = {"support-bot": 0, "triage-bot": 0}
    for _ in range(3):
        spent["support-bot"] += gate.reserve(MODEL, input_tokens=10, max_output_tokens=10,
                                             feature=summarize).commit(10, 5)
    spent["triage-bot"] += gate.reserve(MODEL, input_tokens=7, max_output_tokens=7, agent=triage,
                                        feature="classify").commit(7, 3)
    # Outcomes: with a call's usage (a per-token model charges the tokens)...
    spent["support-bot"] += gate.reserve(MODEL, input_tokens=4, max_output_tokens=4).commit(4, 4, outcomes=1)
    # ...and on their own, rated by the per-outcome model.
    assert gate.report_outcomes("resolved-ticket", outcomes=2, feature="summarize") == 2 * 990_000
    spent["support-bot"] += 2 * 990_000
    # ...and in the call that produced them, whose reservation covers them.
    hold = gate.reserve("resolved-ticket", outcomes=1)
    assert hold.amount == 990_000
    spent["support-bot"] += hold.commit(outcomes=1)
    with pytest.raises(tollgate.ReserveError) as e:
        gate.reserve(MODEL, input_tokens=1, agent="x" * 100)
    assert e.value.reason == "invalid_name"
    with pytest.raises(ValueError, match="agent"):
        gate.reserve(MODEL, input_tokens=1, agent=summarize)

    del gate
    gc.collect()
    assert sc.stop()
    st = auth.statement()
    assert st.calls == 7 and st.total == sum(spent.values())
    # Each agent name has lanes of its own, so the statement's agent lines split the spend
    # exactly as the agents did (they name the instance until the ledger side of the
    # attribution issue prints the agent's name there).
    assert sorted(v[0] for v in st.by_agent.values()) == sorted(spent.values()), st.text
    assert st.by_feature["summarize"][0] == 3 * 15 + 2 * 990_000, st.text
    assert st.by_feature["classify"][0] == 10, st.text

"""The binding against a real sidecar: attach errors, holds (commit, cancel, context
manager, garbage collection), names, tasks, and what the ledger posts."""

from __future__ import annotations

import gc
from pathlib import Path

import pytest

import tollgate
from harness import CREDIT, MODEL, TENANT, region_totals, wait_until


def test_attach_errors_say_what_is_wrong(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(tollgate.AttachError) as e:
        tollgate.Gate(tmp_path / "nothing-here")
    assert e.value.reason == "not_found"
    assert e.value.path == str(tmp_path / "nothing-here")
    assert "sidecar" in str(e.value)

    with pytest.raises(tollgate.AttachError) as e:
        tollgate.Gate.from_env()
    assert e.value.reason == "not_found" and "TOLLGATE_REGION" in str(e.value)

    foreign = tmp_path / "foreign"
    foreign.write_bytes(b"NOTAREGION" * 1000)
    with pytest.raises(tollgate.AttachError) as e:
        tollgate.Gate.attach(foreign)
    assert e.value.reason == "foreign_magic"

    short = tmp_path / "short"
    short.write_bytes(b"TOL")
    with pytest.raises(tollgate.AttachError) as e:
        tollgate.Gate(short)
    assert e.value.reason in ("truncated", "foreign_magic")
    assert isinstance(e.value, tollgate.TollgateError)


def test_credits_are_exact_integers() -> None:
    assert tollgate.credits(5) == 5 * CREDIT
    assert tollgate.credits("0.000001") == 1
    assert tollgate.credits("2.5") == 2_500_000
    with pytest.raises(TypeError):
        tollgate.credits(0.1)  # type: ignore[arg-type]
    for bad in ("0.0000001", "-1", "abc", "nan"):
        with pytest.raises(ValueError):
            tollgate.credits(bad)


def test_reserve_commit_cancel_and_the_ledger_agree(pod) -> None:
    auth, sc = pod
    gate = tollgate.Gate(sc.region, tenant=TENANT)
    model = gate.model(MODEL)
    assert model.name == MODEL
    charged = 0
    calls = 0

    # 1 micro-credit per token: held = input + max output, charged = input + output.
    hold = gate.reserve(model, input_tokens=100, max_output_tokens=200)
    assert hold.amount == 300 and hold.open and hold.charged is None
    assert hold.commit(input_tokens=100, output_tokens=50) == 150
    assert not hold.open and hold.charged == 150
    charged, calls = charged + 150, calls + 1
    with pytest.raises(tollgate.HoldClosed) as e:
        hold.commit(input_tokens=1, output_tokens=1)
    assert e.value.reason == "closed"
    hold.cancel()  # a no-op on a settled hold

    # The name works as well as the handle; an overrun is charged in full.
    hold = gate.reserve(MODEL, input_tokens=10, max_output_tokens=10)
    assert hold.commit(input_tokens=10, output_tokens=40) == 50
    charged, calls = charged + 50, calls + 1

    # Cancelled holds cost nothing: explicitly, by a context manager left by an exception
    # or without a commit, and by garbage collection.
    gate.reserve(model, input_tokens=1, max_output_tokens=1).cancel()
    with pytest.raises(RuntimeError, match="the call failed"):
        with gate.reserve(model, input_tokens=100, max_output_tokens=100) as h:
            raise RuntimeError("the call failed")
    assert not h.open and h.charged is None
    with gate.reserve(model, input_tokens=100, max_output_tokens=100) as h:
        pass
    assert not h.open
    lost = gate.reserve(model, input_tokens=100, max_output_tokens=100)
    del lost
    gc.collect()

    # A context manager that commits keeps the charge.
    with gate.reserve(model, input_tokens=20, max_output_tokens=100) as h:
        assert h.commit(input_tokens=20, output_tokens=30) == 50
    charged, calls = charged + 50, calls + 1

    # A pre-rated call.
    hold = gate.reserve(cost=1_000)
    assert hold.amount == 1_000
    assert hold.commit_credits(400) == 400
    charged, calls = charged + 400, calls + 1

    del gate, hold, h
    gc.collect()
    assert sc.stop(), "the sidecar did not stop cleanly"
    st = auth.statement()
    # What the ledger bills plus any overrun it shows apart is what was committed.
    assert (st.total + st.overrun, st.calls) == (charged, calls)
    r = region_totals(sc.region)
    assert r["consumed"] == charged and r["held"] == 0 and r["left"] == 0 and r["overrun"] == 30
    wait_until(lambda: auth.balance()["held_micro"] == 0, 10, "the leases to settle")
    assert auth.balance()["consumed_micro"] == charged


def test_bad_calls_get_typed_errors(pod) -> None:
    _, sc = pod
    gate = tollgate.Gate(sc.region)
    with pytest.raises(tollgate.ReserveError) as e:
        gate.reserve("no-such-model", input_tokens=1, max_output_tokens=1)
    assert e.value.reason == "unknown_model"
    with pytest.raises(tollgate.ReserveError) as e:
        gate.tenant("globex")
    assert e.value.reason == "unknown_tenant"
    with pytest.raises(tollgate.ReserveError) as e:
        gate.reserve(MODEL, tenant="globex", input_tokens=1)
    assert e.value.reason == "unknown_tenant"
    with pytest.raises(ValueError, match="tier"):
        gate.reserve(MODEL, tier="urgent")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="initiator"):
        gate.reserve(MODEL, initiator="robot")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="not both"):
        gate.reserve(MODEL, cost=5)
    with pytest.raises(ValueError):
        gate.reserve()
    with pytest.raises(TypeError):
        gate.reserve(42)  # type: ignore[arg-type]
    with pytest.raises(OverflowError):
        gate.reserve(MODEL, input_tokens=-1)
    other = tollgate.Gate(sc.region)
    with pytest.raises(ValueError, match="another Gate"):
        gate.reserve(MODEL, tenant=other.tenant(TENANT), input_tokens=1)
    # Nothing was held by any of them.
    assert gate.reserve(MODEL, tenant=gate.tenant(TENANT), input_tokens=1, max_output_tokens=1).amount == 2


def first_call(gate: tollgate.Gate, **call) -> tollgate.Hold:
    """A task's first call: its registration reaches the sidecar and the authority (which
    leases its budget) asynchronously, so it is retried for a while."""
    def attempt():
        try:
            return gate.reserve(MODEL, **call)
        except (tollgate.TaskExhausted, tollgate.Denied):
            return None

    return wait_until(attempt, 15, "a named task's first call")


def test_a_task_budget_stops_the_task_not_the_tenant(pod) -> None:
    _, sc = pod
    gate = tollgate.Gate(sc.region, tenant=TENANT)
    task = gate.open_task("ticket-4711", budget=1_000)
    assert (task.id, task.budget, task.completed) == ("ticket-4711", 1_000, False)
    holds = [first_call(gate, input_tokens=100, max_output_tokens=200, task=task)]
    with pytest.raises(tollgate.TaskExhausted) as e:
        for _ in range(10):
            holds.append(gate.reserve(MODEL, input_tokens=100, max_output_tokens=200, task=task))
    err = e.value
    assert (err.task, err.why, err.needed) == ("ticket-4711", "budget", 300)
    assert sum(h.amount for h in holds) <= 1_000, "the task held more than its budget"
    assert "ticket-4711" in str(err) and isinstance(err, tollgate.ReserveError)
    # The tenant is fine: the same call without the task passes.
    gate.reserve(MODEL, input_tokens=100, max_output_tokens=200).cancel()
    for h in holds:
        h.commit(input_tokens=100, output_tokens=50)


def test_a_task_limits_its_calls_and_completes_once(pod) -> None:
    _, sc = pod
    gate = tollgate.Gate(sc.region, tenant=TENANT)
    task = gate.open_task("ticket-9", budget=tollgate.credits(1), max_calls=2)
    assert task.max_calls == 2
    first_call(gate, input_tokens=1, max_output_tokens=1, task=task).commit(1, 1)
    gate.reserve(MODEL, input_tokens=1, max_output_tokens=1, task=task).commit(1, 1)
    with pytest.raises(tollgate.TaskExhausted) as e:
        gate.reserve(MODEL, input_tokens=1, max_output_tokens=1, task=task)
    assert (e.value.task, e.value.why) == ("ticket-9", "max_calls")
    other = gate.open_task("ticket-10", budget=tollgate.credits(1))
    other.complete()
    assert other.completed
    with pytest.raises(tollgate.TaskExhausted) as e:
        other.complete()
    assert e.value.why == "completed"
    with pytest.raises(tollgate.TaskExhausted) as e:
        gate.reserve(MODEL, input_tokens=1, max_output_tokens=1, task=other)
    assert e.value.why == "completed"
    with pytest.raises(tollgate.ReserveError) as e:
        gate.open_task("", budget=1)
    assert e.value.reason == "invalid_name"

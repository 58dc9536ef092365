"""tollgate.agents with the real OpenAI Agents SDK (its chat-completions model on the real
``openai`` client, talking to llm-upstream): every model call of a run is reserved before
it is sent and committed with the usage the SDK reports; the run is the task."""

from __future__ import annotations

import asyncio
import gc
import os

import pytest

os.environ["OPENAI_AGENTS_DISABLE_TRACING"] = "1"  # nothing leaves the machine

import openai  # noqa: E402
from agents import Agent, ModelSettings, OpenAIChatCompletionsModel, Runner, set_tracing_disabled  # noqa: E402

import tollgate  # noqa: E402
import tollgate.agents  # noqa: E402
from harness import TENANT, sdk_charge  # noqa: E402

set_tracing_disabled(True)


def make_agent(upstream, max_tokens: int) -> Agent:
    client = openai.AsyncOpenAI(base_url=upstream.url + "/v1", api_key="k", max_retries=0)
    return Agent(name="support", instructions="answer briefly",
                 model=OpenAIChatCompletionsModel(model="gpt-4o-mini", openai_client=client),
                 model_settings=ModelSettings(max_tokens=max_tokens))


def test_every_model_call_of_a_run_is_reserved_and_committed(pod, upstream) -> None:
    auth, sc = pod
    gate = tollgate.Gate(sc.region, tenant=TENANT)
    agent = make_agent(upstream, 40)

    async def main() -> None:
        hooks = tollgate.agents.TollgateRunHooks(gate, task_id="ticket-1", budget=tollgate.credits("0.01"))
        async with hooks:
            result = await Runner.run(agent, "word " * 200, hooks=hooks)
        assert result.final_output
        assert hooks.task.id == "ticket-1" and hooks.task.remaining < hooks.task.budget
        assert hooks.task.completed, "the run's final output completes its task (a work unit)"
        # Another run, another task: its budget is too small for one call, so the run stops
        # before anything is sent.
        sent = len(upstream.requests())
        small = tollgate.agents.TollgateRunHooks(gate, task_id="ticket-2", budget=5)
        with pytest.raises(tollgate.TaskExhausted) as e:
            await Runner.run(agent, "word " * 200, hooks=small)
        assert e.value.task == "ticket-2"
        assert len(upstream.requests()) == sent

    asyncio.run(main())
    journal = [j for j in upstream.requests() if j["path"].endswith("/chat/completions")]
    assert len(journal) == 1
    expected = sdk_charge(journal[0]["input_tokens"], journal[0]["output_tokens_sent"])
    del gate
    gc.collect()
    assert sc.stop()
    st = auth.statement()
    assert (st.calls, st.total) == (1, expected)

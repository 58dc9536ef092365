"""tollgate.openai with the real ``openai`` SDK talking to llm-upstream (OpenAI's wire
format, streams and usage chunks included): what the ledger posts is what the responses
reported, streams ask for their usage, failures cost nothing, denials send nothing."""

from __future__ import annotations

import asyncio
import gc

import openai
import pytest

import tollgate
import tollgate.openai
from harness import TENANT, sdk_charge, wait_until
from tollgate import tokens

MODEL = "gpt-4o-mini"
WORDS = " ".join(["word"] * 400)


def messages(text: str = WORDS) -> list:
    return [{"role": "user", "content": text}]


def test_openai_sync_whole_streamed_failed_and_denied(pod, upstream) -> None:
    auth, sc = pod
    gate = tollgate.Gate(sc.region, tenant=TENANT)
    client = tollgate.openai.wrap(
        openai.OpenAI(base_url=upstream.url + "/v1", api_key="k", max_retries=0), gate)
    expected = 0
    calls = 0

    r = client.chat.completions.create(model=MODEL, messages=messages(), max_tokens=300,
                                       extra_headers={"x-upstream-output-tokens": "120"})
    assert (r.usage.prompt_tokens, r.usage.completion_tokens) == (400, 120)
    expected, calls = expected + sdk_charge(400, 120), calls + 1

    # A stream asks for its usage chunk, and is committed with it when exhausted.
    chunks = list(client.chat.completions.create(
        model=MODEL, messages=messages(), max_completion_tokens=200, stream=True,
        extra_headers={"x-upstream-output-tokens": "50"}))
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 50
    expected, calls = expected + sdk_charge(400, 50), calls + 1

    # The helper stream goes through create too.
    with client.chat.completions.stream(model=MODEL, messages=messages(), max_tokens=30) as s:
        final = s.get_final_completion()
    assert final.usage.completion_tokens == 30
    expected, calls = expected + sdk_charge(400, 30), calls + 1

    # A stream cut mid-way is committed with the estimate: the input counted before the
    # call and the tokens streamed (llm-upstream's words are one token each).
    estimate = tokens.count_messages(MODEL, messages())
    received = []
    with pytest.raises(openai.APIError):
        for chunk in client.chat.completions.create(
                model=MODEL, messages=messages(), max_tokens=100, stream=True,
                extra_headers={"x-upstream-output-tokens": "40", "x-upstream-drop-after": "7"}):
            received += [c.delta.content or "" for c in chunk.choices]
    streamed = tokens.count_text(MODEL, "".join(received))
    assert streamed <= 7
    expected, calls = expected + sdk_charge(estimate, streamed), calls + 1

    # A request that fails costs nothing.
    with pytest.raises(openai.InternalServerError):
        client.chat.completions.create(model=MODEL, messages=messages(), max_tokens=10,
                                       extra_headers={"x-upstream-fail-status": "500"})

    # A denial is raised before anything is sent.
    sent = len(upstream.requests())
    tiny = gate.open_task("tiny", budget=10)
    denied = tollgate.openai.wrap(
        openai.OpenAI(base_url=upstream.url + "/v1", api_key="k", max_retries=0), gate, task=tiny)
    with pytest.raises(tollgate.TaskExhausted) as e:
        denied.chat.completions.create(model=MODEL, messages=messages(), max_tokens=100)
    assert e.value.task == "tiny"
    assert len(upstream.requests()) == sent
    assert tiny.remaining == 10

    journal = upstream.requests()
    assert [j["stream"] for j in journal] == [False, True, True, True, False]
    del client, denied, chunks, s, gate
    gc.collect()
    assert sc.stop()
    st = auth.statement()
    assert (st.calls, st.total) == (calls, expected)


def test_openai_async_whole_and_streamed(pod, upstream) -> None:
    auth, sc = pod
    gate = tollgate.Gate(sc.region, tenant=TENANT)

    async def main() -> int:
        client = tollgate.openai.wrap(
            openai.AsyncOpenAI(base_url=upstream.url + "/v1", api_key="k", max_retries=0), gate)
        total = 0
        replies = await asyncio.gather(*[
            client.chat.completions.create(model=MODEL, messages=messages(), max_tokens=64,
                                           extra_headers={"x-upstream-output-tokens": str(10 + i)})
            for i in range(5)])
        for i, r in enumerate(replies):
            assert r.usage.completion_tokens == 10 + i
            total += sdk_charge(400, 10 + i)
        stream = await client.chat.completions.create(
            model=MODEL, messages=messages(), max_tokens=64, stream=True,
            extra_headers={"x-upstream-output-tokens": "33"})
        last = None
        async for chunk in stream:
            last = chunk
        assert last.usage.completion_tokens == 33
        total += sdk_charge(400, 33)
        with pytest.raises(openai.BadRequestError):
            await client.chat.completions.create(model=MODEL, messages=messages(), max_tokens=5,
                                                 extra_headers={"x-upstream-fail-status": "400"})
        return total

    expected = asyncio.run(main())
    del gate
    gc.collect()
    assert sc.stop()
    st = auth.statement()
    assert (st.calls, st.total) == (6, expected)
    wait_until(lambda: auth.balance()["held_micro"] == 0, 10, "the leases to settle")

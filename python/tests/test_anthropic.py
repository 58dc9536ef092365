"""tollgate.anthropic with the real ``anthropic`` SDK talking to llm-upstream (Anthropic's
wire format: message_start / message_delta usage): the ledger posts what the responses
reported; failures cost nothing."""

from __future__ import annotations

import asyncio
import gc

import anthropic
import pytest

import tollgate
import tollgate.anthropic
from harness import TENANT, sdk_charge
from tollgate import tokens

MODEL = "claude-3-5-haiku-latest"
WORDS = " ".join(["word"] * 300)
MESSAGES = [{"role": "user", "content": WORDS}]


def test_anthropic_create_stream_and_failures(pod, upstream) -> None:
    auth, sc = pod
    gate = tollgate.Gate(sc.region, tenant=TENANT)
    client = tollgate.anthropic.wrap(
        anthropic.Anthropic(base_url=upstream.url, api_key="k", max_retries=0), gate)
    expected = calls = 0

    m = client.messages.create(model=MODEL, max_tokens=200, messages=MESSAGES,
                               system="be brief", extra_headers={"x-upstream-output-tokens": "60"})
    assert (m.usage.input_tokens, m.usage.output_tokens) == (302, 60)
    expected, calls = expected + sdk_charge(302, 60), calls + 1

    events = list(client.messages.create(model=MODEL, max_tokens=200, messages=MESSAGES,
                                         stream=True, extra_headers={"x-upstream-output-tokens": "25"}))
    assert events[-2].type == "message_delta" and events[-2].usage.output_tokens == 25
    expected, calls = expected + sdk_charge(300, 25), calls + 1

    with client.messages.stream(model=MODEL, max_tokens=40, messages=MESSAGES) as s:
        final = s.get_final_message()
    assert final.usage.output_tokens == 40
    expected, calls = expected + sdk_charge(300, 40), calls + 1

    # Cut after 9 tokens: message_start gave the input, the streamed text the output.
    received, started = [], False
    with pytest.raises(anthropic.APIError):
        for event in client.messages.create(model=MODEL, max_tokens=100, messages=MESSAGES, stream=True,
                                            extra_headers={"x-upstream-output-tokens": "50",
                                                           "x-upstream-drop-after": "9"}):
            if event.type == "message_start":
                started = True
            if event.type == "content_block_delta":
                received.append(event.delta.text)
    # What the client saw before the cut (the SDK may see none of it): message_start's
    # input, else the count made before the call; the streamed text's tokens.
    streamed = tokens.count_text(MODEL, "".join(received))
    assert streamed <= 9
    inp = 300 if started else tokens.count_messages(MODEL, MESSAGES)
    expected, calls = expected + sdk_charge(inp, streamed), calls + 1

    with pytest.raises(anthropic.InternalServerError):
        client.messages.create(model=MODEL, max_tokens=10, messages=MESSAGES,
                               extra_headers={"x-upstream-fail-status": "529"})
    assert tokens.count_messages(MODEL, MESSAGES) >= 300

    del client, events, s, gate
    gc.collect()
    assert sc.stop()
    st = auth.statement()
    assert (st.calls, st.total) == (calls, expected)


def test_anthropic_async_create_and_stream(pod, upstream) -> None:
    auth, sc = pod
    gate = tollgate.Gate(sc.region, tenant=TENANT)

    async def main() -> int:
        client = tollgate.anthropic.wrap(
            anthropic.AsyncAnthropic(base_url=upstream.url, api_key="k", max_retries=0), gate)
        m = await client.messages.create(model=MODEL, max_tokens=50, messages=MESSAGES,
                                         extra_headers={"x-upstream-output-tokens": "12"})
        total = sdk_charge(300, m.usage.output_tokens)
        stream = await client.messages.create(model=MODEL, max_tokens=50, messages=MESSAGES,
                                              stream=True, extra_headers={"x-upstream-output-tokens": "7"})
        async for _ in stream:
            pass
        total += sdk_charge(300, 7)
        async with client.messages.stream(model=MODEL, max_tokens=20, messages=MESSAGES) as s:
            final = await s.get_final_message()
        total += sdk_charge(300, final.usage.output_tokens)
        return total

    expected = asyncio.run(main())
    del gate
    gc.collect()
    assert sc.stop()
    st = auth.statement()
    assert (st.calls, st.total) == (3, expected)

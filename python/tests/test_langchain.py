"""tollgate.langchain with real LangChain (``langchain-openai``'s ChatOpenAI on the real
``openai`` client, talking to llm-upstream): every model call is reserved before it is
sent and committed with the usage the message reports; a top-level run is the task."""

from __future__ import annotations

import asyncio
import gc

import pytest
from langchain_core.prompts import ChatPromptTemplate
from langchain_openai import ChatOpenAI

import tollgate
import tollgate.langchain
from harness import TENANT, sdk_charge


def chat(upstream, **kw) -> ChatOpenAI:
    return ChatOpenAI(model="gpt-4o-mini", base_url=upstream.url + "/v1", api_key="k",
                      max_retries=0, **kw)


def test_model_calls_of_chains_are_reserved_and_committed(pod, upstream) -> None:
    auth, sc = pod
    gate = tollgate.Gate(sc.region, tenant=TENANT)
    handler = tollgate.langchain.TollgateCallbackHandler(gate, budget=tollgate.credits("0.01"))
    prompt = ChatPromptTemplate.from_messages([("system", "be brief"), ("user", "{question}")])
    chain = prompt | chat(upstream, max_tokens=30)
    config = {"callbacks": [handler]}

    # Whole: the chain is the run, and its task...
    reply = chain.invoke({"question": "word " * 100}, config=config)
    assert reply.usage_metadata["output_tokens"] == 30
    # ...streamed, with the usage asked for...
    streamed = chat(upstream, max_tokens=20, streaming=True, stream_usage=True)
    chunks = list(streamed.stream("word " * 50, config=config))
    assert sum((c.usage_metadata or {}).get("output_tokens", 0) for c in chunks) == 20
    # ...async, and a failing call that costs nothing.
    async def main() -> None:
        await chain.ainvoke({"question": "word " * 10}, config=config)
        failing = chat(upstream, max_tokens=5, default_headers={"x-upstream-fail-status": "500"})
        with pytest.raises(Exception):
            await failing.ainvoke("hi", config=config)

    asyncio.run(main())

    # A run whose task budget cannot cover one call is stopped before it sends anything.
    sent = len(upstream.requests())
    poor = tollgate.langchain.TollgateCallbackHandler(gate, budget=3)
    with pytest.raises(tollgate.TaskExhausted):
        chain.invoke({"question": "word " * 100}, config={"callbacks": [poor]})
    assert len(upstream.requests()) == sent

    journal = [j for j in upstream.requests() if j["status"] == 200]
    assert len(journal) == 3
    expected = sum(sdk_charge(j["input_tokens"], j["output_tokens_sent"]) for j in journal)
    del gate, handler, poor
    gc.collect()
    assert sc.stop()
    st = auth.statement()
    assert (st.calls, st.total) == (3, expected)

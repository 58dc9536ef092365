"""The official ``openai`` client on Tollgate: every chat completion is reserved before it
is sent and committed with the usage the response reports.

>>> from openai import OpenAI
>>> import tollgate, tollgate.openai
>>> client = tollgate.openai.wrap(OpenAI(), tollgate.Gate(), tenant="acme")
>>> client.chat.completions.create(model="gpt-4o-mini", max_tokens=300,
...                                messages=[{"role": "user", "content": "hi"}])

``wrap`` patches ``chat.completions.create`` (which ``chat.completions.stream`` uses too)
and ``chat.completions.parse`` of that client (``OpenAI`` or ``AsyncOpenAI``) and returns
it; a ``Denied`` is raised before any request is sent. The hold is sized from the request:
its ``model``, ``max_completion_tokens`` or ``max_tokens`` (times ``n``; without either,
the price book's maximum for the model) and its input tokens (:mod:`tollgate.tokens`).
Streams get ``stream_options.include_usage`` and are committed with the usage chunk when
they end (with an estimate if they end without one); a request that fails is cancelled.
Copies made by ``client.with_options()`` are not wrapped: wrap them too.
"""

from __future__ import annotations

from typing import Any, Optional, Tuple

from . import tokens
from ._metering import AsyncMeteredStream, Guard, Meter, MeteredStream, commit, guarded

__all__ = ["wrap"]


class _ChatMeter(Meter):
    def see(self, chunk: Any) -> None:
        usage = getattr(chunk, "usage", None)
        if usage is not None:
            self.input = usage.prompt_tokens
            self.output = usage.completion_tokens
        for choice in getattr(chunk, "choices", None) or ():
            delta = getattr(choice, "delta", None)
            text = getattr(delta, "content", None) if delta is not None else None
            if text:
                self.parts.append(text)


def _plan(guard: Guard, kwargs: dict) -> Tuple[str, int, Optional[int]]:
    model = kwargs["model"]
    most = kwargs.get("max_completion_tokens") or kwargs.get("max_tokens")
    n = kwargs.get("n") or 1
    if isinstance(most, int) and isinstance(n, int) and n > 1:
        most *= n
    input_tokens = tokens.count_messages(model, kwargs.get("messages") or (),
                                         extra=kwargs.get("tools"), counter=guard.count)
    return model, input_tokens, most if isinstance(most, int) else None


def _with_usage(kwargs: dict) -> dict:
    if kwargs.get("stream") is True:
        options = dict(kwargs.get("stream_options") or {})
        options["include_usage"] = True
        kwargs = dict(kwargs, stream_options=options)
    return kwargs


def _commit_completion(guard: Guard, hold: Any, completion: Any, model: str, estimate: int) -> None:
    usage = getattr(completion, "usage", None)
    if usage is not None:
        commit(hold, usage.prompt_tokens, usage.completion_tokens)
        return
    text = "".join(getattr(getattr(c, "message", None), "content", None) or ""
                   for c in getattr(completion, "choices", None) or ())
    commit(hold, estimate, guard.count(model, text) if text else 0)


def _sync(guard: Guard, original: Any) -> Any:
    def call(*args: Any, **kwargs: Any) -> Any:
        model, estimate, most = _plan(guard, kwargs)
        kwargs = _with_usage(kwargs)
        hold = guard.reserve(model, estimate, most)
        result = guarded(lambda: original(*args, **kwargs), hold)
        if kwargs.get("stream") is True:
            return MeteredStream(result, _ChatMeter(hold, model, estimate, guard.count))
        _commit_completion(guard, hold, result, model, estimate)
        return result

    call.__wrapped__ = original  # type: ignore[attr-defined]
    call.__doc__ = original.__doc__
    return call


def _async(guard: Guard, original: Any) -> Any:
    async def call(*args: Any, **kwargs: Any) -> Any:
        model, estimate, most = _plan(guard, kwargs)
        kwargs = _with_usage(kwargs)
        hold = await guard.reserve_async(model, estimate, most)
        try:
            result = await original(*args, **kwargs)
        except BaseException:
            hold.cancel()
            raise
        if kwargs.get("stream") is True:
            return AsyncMeteredStream(result, _ChatMeter(hold, model, estimate, guard.count))
        _commit_completion(guard, hold, result, model, estimate)
        return result

    call.__wrapped__ = original  # type: ignore[attr-defined]
    call.__doc__ = original.__doc__
    return call


def wrap(client: Any, gate: Any, *, tenant: Any = None, tier: str = "interactive",
         initiator: str = "human", task: Any = None, agent: Any = None, feature: Any = None,
         count_tokens: Optional[tokens.Counter] = None) -> Any:
    """Puts every chat completion of ``client`` (``openai.OpenAI`` or ``AsyncOpenAI``) on
    ``gate``, with these call fields; returns ``client``."""
    import openai

    guard = Guard(gate, tenant=tenant, tier=tier, initiator=initiator, task=task,
                  agent=agent, feature=feature, count_tokens=count_tokens)
    completions = client.chat.completions
    make = _async if isinstance(client, openai.AsyncOpenAI) else _sync
    completions.create = make(guard, completions.create)
    completions.parse = make(guard, completions.parse)
    return client

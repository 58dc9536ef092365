"""The official ``anthropic`` client on Tollgate: every ``messages.create`` (whole or
``stream=True``) and ``messages.stream`` is reserved before it is sent and committed with
the usage the response reports.

>>> from anthropic import Anthropic
>>> import tollgate, tollgate.anthropic
>>> client = tollgate.anthropic.wrap(Anthropic(), tollgate.Gate(), tenant="acme")
>>> client.messages.create(model="claude-3-5-haiku-latest", max_tokens=300,
...                        messages=[{"role": "user", "content": "hi"}])

The hold is sized from the request's ``model``, ``max_tokens`` (required by the API) and
its input tokens (:mod:`tollgate.tokens`: Claude's tokenizer is not public, so an
estimate). Input usage is ``input_tokens`` plus the cache creation and cache read tokens
(all are input the price book charges as such). A stream is committed with the
``message_start`` input and the last ``message_delta`` output when it ends (an estimate if
it is cut before them); a request that fails is cancelled.
"""

from __future__ import annotations

from typing import Any, Optional, Tuple

from . import tokens
from ._metering import AsyncMeteredStream, Guard, Meter, MeteredStream, commit, guarded

__all__ = ["wrap"]


def _input_of(usage: Any) -> int:
    return sum(getattr(usage, k, None) or 0
               for k in ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens"))


class _MessagesMeter(Meter):
    def see(self, event: Any) -> None:
        kind = getattr(event, "type", None)
        if kind == "message_start":
            usage = event.message.usage
            self.input = _input_of(usage)
        elif kind == "message_delta":
            usage = getattr(event, "usage", None)
            if usage is not None:
                self.output = usage.output_tokens
                if getattr(usage, "input_tokens", None):
                    self.input = _input_of(usage)
        elif kind == "content_block_delta":
            text = getattr(event.delta, "text", None)
            if text:
                self.parts.append(text)


def _plan(guard: Guard, kwargs: dict) -> Tuple[str, int, Optional[int]]:
    model = kwargs["model"]
    most = kwargs.get("max_tokens")
    estimate = tokens.count_messages(model, kwargs.get("messages") or (),
                                     system=kwargs.get("system"), extra=kwargs.get("tools"),
                                     counter=guard.count)
    return model, estimate, most if isinstance(most, int) else None


def _commit_message(guard: Guard, hold: Any, message: Any, model: str, estimate: int) -> None:
    usage = getattr(message, "usage", None)
    if usage is not None:
        commit(hold, _input_of(usage), usage.output_tokens)
        return
    text = "".join(getattr(b, "text", "") or "" for b in getattr(message, "content", None) or ())
    commit(hold, estimate, guard.count(model, text) if text else 0)


def _settle_snapshot(guard: Guard, hold: Any, stream: Any, model: str, estimate: int,
                     failed: bool) -> None:
    try:
        message = stream.current_message_snapshot
    except Exception:  # no message_start arrived
        message = None
    if message is None:
        if failed:
            hold.cancel()
        else:
            commit(hold, estimate, 0)
        return
    _commit_message(guard, hold, message, model, estimate)


class _Manager:
    """``messages.stream(...)``: reserves on entering, settles on leaving."""

    def __init__(self, guard: Guard, manager: Any, plan: Tuple[str, int, Optional[int]]) -> None:
        self._guard, self._manager, self._plan = guard, manager, plan

    def __enter__(self) -> Any:
        model, estimate, most = self._plan
        self._hold = self._guard.reserve(model, estimate, most)
        self._stream = guarded(self._manager.__enter__, self._hold)
        return self._stream

    def __exit__(self, et: Any, ev: Any, tb: Any) -> Any:
        try:
            return self._manager.__exit__(et, ev, tb)
        finally:
            model, estimate, _ = self._plan
            _settle_snapshot(self._guard, self._hold, self._stream, model, estimate, et is not None)

    async def __aenter__(self) -> Any:
        model, estimate, most = self._plan
        self._hold = await self._guard.reserve_async(model, estimate, most)
        try:
            self._stream = await self._manager.__aenter__()
        except BaseException:
            self._hold.cancel()
            raise
        return self._stream

    async def __aexit__(self, et: Any, ev: Any, tb: Any) -> Any:
        try:
            return await self._manager.__aexit__(et, ev, tb)
        finally:
            model, estimate, _ = self._plan
            _settle_snapshot(self._guard, self._hold, self._stream, model, estimate, et is not None)


def _sync_create(guard: Guard, original: Any) -> Any:
    def create(*args: Any, **kwargs: Any) -> Any:
        model, estimate, most = _plan(guard, kwargs)
        hold = guard.reserve(model, estimate, most)
        result = guarded(lambda: original(*args, **kwargs), hold)
        if kwargs.get("stream") is True:
            return MeteredStream(result, _MessagesMeter(hold, model, estimate, guard.count))
        _commit_message(guard, hold, result, model, estimate)
        return result

    create.__wrapped__ = original  # type: ignore[attr-defined]
    return create


def _async_create(guard: Guard, original: Any) -> Any:
    async def create(*args: Any, **kwargs: Any) -> Any:
        model, estimate, most = _plan(guard, kwargs)
        hold = await guard.reserve_async(model, estimate, most)
        try:
            result = await original(*args, **kwargs)
        except BaseException:
            hold.cancel()
            raise
        if kwargs.get("stream") is True:
            return AsyncMeteredStream(result, _MessagesMeter(hold, model, estimate, guard.count))
        _commit_message(guard, hold, result, model, estimate)
        return result

    create.__wrapped__ = original  # type: ignore[attr-defined]
    return create


def _stream(guard: Guard, original: Any) -> Any:
    def stream(*args: Any, **kwargs: Any) -> Any:
        return _Manager(guard, original(*args, **kwargs), _plan(guard, kwargs))

    stream.__wrapped__ = original  # type: ignore[attr-defined]
    return stream


def wrap(client: Any, gate: Any, *, tenant: Any = None, tier: str = "interactive",
         initiator: str = "human", task: Any = None, agent: Any = None, feature: Any = None,
         count_tokens: Optional[tokens.Counter] = None) -> Any:
    """Puts every message of ``client`` (``anthropic.Anthropic`` or ``AsyncAnthropic``) on
    ``gate``, with these call fields; returns ``client``."""
    import anthropic

    guard = Guard(gate, tenant=tenant, tier=tier, initiator=initiator, task=task,
                  agent=agent, feature=feature, count_tokens=count_tokens)
    messages = client.messages
    asynchronous = isinstance(client, anthropic.AsyncAnthropic)
    messages.create = (_async_create if asynchronous else _sync_create)(guard, messages.create)
    messages.stream = _stream(guard, messages.stream)
    return client

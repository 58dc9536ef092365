"""What the SDK integrations share: the call policy (``Guard``) and streams that commit
their hold when they end.

**Invariant.** Every hold an integration takes is settled exactly once: committed with the
provider's reported usage when the response (or the stream's usage event) has it, with an
estimate when a stream ends without it (the tokens streamed were generated, and billed),
and cancelled when the request failed before any response.
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Optional, Union

from . import tokens
from ._native import Gate, Hold, Model, Task, Tenant
from .errors import CommitError

log = logging.getLogger("tollgate")


class Guard:
    """The gate and the call fields every call of an integration is reserved with."""

    def __init__(self, gate: Gate, *, tenant: Union[str, Tenant, None] = None,
                 tier: str = "interactive", initiator: str = "human",
                 task: Optional[Task] = None, agent: Any = None, feature: Any = None,
                 count_tokens: Optional[tokens.Counter] = None) -> None:
        self.gate = gate
        self.tenant = tenant
        self.tier = tier
        self.initiator = initiator
        self.task = task
        self.agent = agent
        self.feature = feature
        self.count: tokens.Counter = count_tokens or tokens.count_text

    def _kw(self, model: Union[str, Model], input_tokens: int,
            max_output_tokens: Optional[int], **over: Any) -> dict:
        kw = dict(model=model, input_tokens=input_tokens, max_output_tokens=max_output_tokens,
                  tier=self.tier, initiator=self.initiator, tenant=self.tenant, task=self.task,
                  agent=self.agent, feature=self.feature)
        kw.update(over)
        return kw

    def reserve(self, model: str, input_tokens: int, max_output_tokens: Optional[int],
                **over: Any) -> Hold:
        """Reserves with the guard's fields (``over`` replaces some: task, agent...)."""
        return self.gate.reserve(**self._kw(model, input_tokens, max_output_tokens, **over))

    async def reserve_async(self, model: str, input_tokens: int,
                            max_output_tokens: Optional[int], **over: Any) -> Hold:
        return await self.gate.reserve_async(**self._kw(model, input_tokens, max_output_tokens,
                                                        **over))


def commit(hold: Hold, input_tokens: int, output_tokens: int) -> None:
    """Commits unless already settled. A commit error never loses the model's answer: it is
    logged (``reclaimed``: nothing was charged; ``rating``: the whole hold was)."""
    if not hold.open:
        return
    try:
        hold.commit(input_tokens=max(0, int(input_tokens)), output_tokens=max(0, int(output_tokens)))
    except CommitError as e:
        log.warning("tollgate: commit failed (%s): %s", e.reason, e)


class Meter:
    """Watches a stream's events and settles its hold when the stream ends."""

    def __init__(self, hold: Hold, model: str, input_estimate: int, count: tokens.Counter) -> None:
        self.hold = hold
        self.model = model
        self.input_estimate = input_estimate
        self.count = count
        self.input: Optional[int] = None
        self.output: Optional[int] = None
        self.parts: list = []

    def see(self, event: Any) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    def settle(self) -> None:
        """The reported usage, or the estimate: the input counted before the call and the
        tokens of the text streamed so far."""
        if not self.hold.open:
            return
        streamed = self.count(self.model, "".join(self.parts)) if self.parts else 0
        inp = self.input if self.input is not None else self.input_estimate
        out = self.output if self.output is not None else streamed
        commit(self.hold, inp, out)


class MeteredStream:
    """A provider stream that settles its hold when it is exhausted, closed, broken off or
    garbage-collected; everything else is the SDK stream's."""

    def __init__(self, stream: Any, meter: Meter) -> None:
        self._stream = stream
        self._meter = meter
        self._gen = self._watch()

    def _watch(self):
        try:
            for item in self._stream:
                self._meter.see(item)
                yield item
        finally:
            self._meter.settle()

    def __iter__(self):
        return self._gen

    def __next__(self) -> Any:
        return next(self._gen)

    def close(self) -> None:
        try:
            self._stream.close()
        finally:
            self._meter.settle()

    def __enter__(self) -> "MeteredStream":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)

    def __del__(self) -> None:
        meter = self.__dict__.get("_meter")
        if meter is not None:
            meter.settle()


class AsyncMeteredStream:
    """The asyncio twin of :class:`MeteredStream`."""

    def __init__(self, stream: Any, meter: Meter) -> None:
        self._stream = stream
        self._meter = meter
        self._gen = self._watch()

    async def _watch(self):
        try:
            async for item in self._stream:
                self._meter.see(item)
                yield item
        finally:
            self._meter.settle()

    def __aiter__(self):
        return self._gen

    async def __anext__(self) -> Any:
        return await self._gen.__anext__()

    async def close(self) -> None:
        try:
            await self._stream.close()
        finally:
            self._meter.settle()

    async def __aenter__(self) -> "AsyncMeteredStream":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)

    def __del__(self) -> None:
        meter = self.__dict__.get("_meter")
        if meter is not None:
            meter.settle()


def guarded(call: Callable[[], Any], hold: Hold) -> Any:
    """Runs the request; a failure before any response cancels the hold."""
    try:
        return call()
    except BaseException:
        hold.cancel()
        raise

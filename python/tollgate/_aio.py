"""What ``Gate.reserve_async`` returns: an awaitable that never blocks the event loop.

The native side has already tried the reserve without waiting (the fast path, done on
the loop's thread: tens of nanoseconds plus the call). Only if the lane was dry does the
bounded wait for the sidecar's top-up happen, on the loop's default executor, with the GIL
released. Errors are raised when awaited, like a coroutine's.
"""

from __future__ import annotations

import asyncio
from typing import Any, Generator, Optional

from ._native import Hold, Pending


class Reserving:
    """``await`` it for the :class:`~tollgate.Hold`, or ``async with`` it: the hold is
    cancelled when the block is left without a commit (an exception included)."""

    __slots__ = ("_hold", "_pending", "_error", "_entered")

    def __init__(self) -> None:
        self._hold: Optional[Hold] = None
        self._pending: Optional[Pending] = None
        self._error: Optional[BaseException] = None
        self._entered: Optional[Hold] = None

    @classmethod
    def ready(cls, hold: Hold) -> "Reserving":
        r = cls()
        r._hold = hold
        return r

    @classmethod
    def pending(cls, pending: Pending) -> "Reserving":
        r = cls()
        r._pending = pending
        return r

    @classmethod
    def failed(cls, error: BaseException) -> "Reserving":
        r = cls()
        r._error = error
        return r

    def __await__(self) -> Generator[Any, None, Hold]:
        if self._error is not None:
            error, self._error = self._error, None
            raise error
        if self._pending is not None:
            pending, self._pending = self._pending, None
            loop = asyncio.get_running_loop()
            # If the awaiting task is cancelled meanwhile, the hold the executor makes is
            # dropped with its future, and a dropped hold cancels itself.
            self._hold = yield from loop.run_in_executor(None, pending.wait).__await__()
        hold = self._hold
        if hold is None:
            raise RuntimeError("this reservation was already awaited and failed")
        return hold

    async def __aenter__(self) -> Hold:
        self._entered = await self
        return self._entered

    async def __aexit__(self, exc_type: Any, exc: Any, tb: Any) -> bool:
        if self._entered is not None:
            self._entered.__exit__(exc_type, exc, tb)
        return False

"""Tollgate for Python agents: ask "may I spend this?" before every LLM call.

The answer comes from shared memory that the pod's Tollgate sidecar maintains, through the
same lock-free fast path as Rust agents (``tollgate-client``), in well under a microsecond.

>>> import tollgate
>>> gate = tollgate.Gate(agent="support-bot")   # the region named by TOLLGATE_REGION
>>> with gate.reserve(model="gpt-4o", tenant="acme", feature="summarize",
...                   input_tokens=1200, max_output_tokens=800) as hold:
...     reply = call_the_model()                # raises Denied before, if over a limit
...     hold.commit(input_tokens=1180, output_tokens=311)

Amounts are integers of micro-credits (``credits("2.5") == 2_500_000``). Errors are the
typed exceptions of :mod:`tollgate.errors`. Integrations: :mod:`tollgate.openai`,
:mod:`tollgate.anthropic`, :mod:`tollgate.agents` (OpenAI Agents SDK),
:mod:`tollgate.langchain`.

Threads: share one gate; each thread gets lanes of its own, and the GIL is released while
a reserve waits for the sidecar. Fork: a child's first call attaches again; holds made by
the parent cannot be settled in the child. Asyncio: ``await gate.reserve_async(...)``.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Union

from ._native import (
    AGENT_ENV,
    MICROS_PER_CREDIT,
    REGION_ENV,
    Gate,
    Hold,
    Model,
    Name,
    Task,
    Tenant,
)
from .errors import (
    AttachError,
    CommitError,
    Denied,
    HoldClosed,
    ReserveError,
    TaskExhausted,
    TollgateError,
)

__all__ = [
    "AGENT_ENV",
    "MICROS_PER_CREDIT",
    "REGION_ENV",
    "Gate",
    "Hold",
    "Model",
    "Name",
    "Task",
    "Tenant",
    "credits",
    "AttachError",
    "CommitError",
    "Denied",
    "HoldClosed",
    "ReserveError",
    "TaskExhausted",
    "TollgateError",
]


def credits(value: Union[int, str, Decimal]) -> int:
    """Credits as micro-credits, exactly: ``credits(5) == 5_000_000``,
    ``credits("0.25") == 250_000``. Floats are refused (money is never a float); more than
    six decimals, or a negative amount, is a ``ValueError``."""
    if isinstance(value, bool) or not isinstance(value, (int, str, Decimal)):
        raise TypeError("credits() takes an int, a decimal string or a Decimal, not a float")
    try:
        d = Decimal(value)
    except InvalidOperation:
        raise ValueError(f"not a number of credits: {value!r}") from None
    micro = d * MICROS_PER_CREDIT
    if not d.is_finite() or d < 0 or micro != micro.to_integral_value():
        raise ValueError(f"not a non-negative number of credits with at most 6 decimals: {value!r}")
    return int(micro)

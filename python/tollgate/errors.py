"""Typed exceptions of the ``tollgate`` package.

Every exception the package raises on purpose is a :class:`TollgateError`. Amounts are
integers in micro-credits (1 credit = 1,000,000), never floats; ``reason`` is a stable
snake_case word to branch on, the message says what to do.
"""

from __future__ import annotations

from typing import Optional

__all__ = [
    "TollgateError",
    "AttachError",
    "ReserveError",
    "Denied",
    "TaskExhausted",
    "CommitError",
    "HoldClosed",
]


class TollgateError(Exception):
    """Base class of every exception tollgate raises."""

    reason: str

    def __init__(self, message: str, reason: str = "error") -> None:
        super().__init__(message)
        self.reason = reason


class AttachError(TollgateError):
    """The region could not be used: ``reason`` says what is wrong with it.

    ``not_found`` (no sidecar, or ``TOLLGATE_REGION`` unset), ``unfinished`` (the sidecar
    is still creating it: retry), ``foreign_magic`` (not a region: check the path),
    ``version_mismatch`` (client and sidecar versions differ), ``truncated``, ``corrupt``
    (restart the sidecar), ``holders`` (the agent cannot write the region's folder),
    ``agent_name`` (the agent name, ``agent=`` or ``TOLLGATE_AGENT``, is unusable), ``io``.
    """

    path: Optional[str]

    def __init__(self, message: str, reason: str = "io", path: Optional[str] = None) -> None:
        super().__init__(message, reason)
        self.path = path


class ReserveError(TollgateError):
    """A reservation was not made. Subclasses: :class:`Denied`, :class:`TaskExhausted`.

    Other reasons: ``unknown_tenant``, ``unknown_model``, ``no_class`` (the tenant has no
    limits for this tier and initiator), ``no_free_lane``, ``too_many_outstanding``,
    ``rating``, ``too_large``, ``price_book``, ``liveness``, ``invalid_name`` (an agent or
    feature name or task id), ``name_table_full``, ``task_table_full``.
    """


class Denied(ReserveError):
    """A limit has no budget left for the call: back off ``retry_after`` seconds.

    ``limit`` is the binding limit (``tenant_wallet``, ``tenant_window``, ``agent``,
    ``tier_window``, ``initiator_window``, ``tier_floor``, ``task``, ``hard_cap``,
    ``emergency_allowance``), or ``None`` when the lane ran dry before the sidecar named
    one (a retry may pass); ``horizon`` its window (``minute``, ``hour``, ``day``,
    ``month``, ``year``, ``total``) if it has one; ``needed`` what the call would have
    held, in micro-credits.
    """

    limit: Optional[str]
    horizon: Optional[str]
    retry_after: float
    tier: str
    needed: int

    def __init__(
        self,
        message: str,
        limit: Optional[str] = None,
        horizon: Optional[str] = None,
        retry_after: float = 0.0,
        tier: str = "interactive",
        needed: int = 0,
    ) -> None:
        super().__init__(message, "denied")
        self.limit = limit
        self.horizon = horizon
        self.retry_after = retry_after
        self.tier = tier
        self.needed = needed


class TaskExhausted(ReserveError):
    """The call's task is out of budget (the tenant is fine): stop or re-budget the task.

    ``task`` names it; ``why`` is ``budget``, ``max_calls`` or ``completed``; ``needed``
    and ``remaining`` are micro-credits.
    """

    task: str
    why: str
    needed: int
    remaining: int

    def __init__(
        self,
        message: str,
        task: str = "",
        why: str = "budget",
        needed: int = 0,
        remaining: int = 0,
    ) -> None:
        super().__init__(message, "task_exhausted")
        self.task = task
        self.why = why
        self.needed = needed
        self.remaining = remaining


class CommitError(TollgateError):
    """A commit did not go as asked: ``rating`` (the usage could not be rated, so the full
    reservation was charged; ``charged`` says how much) or ``reclaimed`` (the sidecar took
    the lane back because this process looked dead to it; nothing was charged)."""

    charged: int

    def __init__(self, message: str, reason: str = "rating", charged: int = 0) -> None:
        super().__init__(message, reason)
        self.charged = charged


class HoldClosed(TollgateError):
    """The hold was already committed or cancelled (``closed``), or belongs to the parent
    of this forked process (``forked``): a child never touches its parent's reservations."""

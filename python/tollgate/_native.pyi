"""Type stubs of the native extension (the Rust crate in ``python/src``)."""

from __future__ import annotations

import os
from typing import Any, Literal, Optional, Union

from ._aio import Reserving

TierName = Literal["interactive", "scheduler", "background"]
InitiatorName = Literal["human", "agent"]

REGION_ENV: str
AGENT_ENV: str
MICROS_PER_CREDIT: int

class Tenant:
    """A tenant of the region, resolved once with :meth:`Gate.tenant`."""

    @property
    def name(self) -> str: ...

class Model:
    """A model of the region's price book, resolved once with :meth:`Gate.model`."""

    @property
    def name(self) -> str: ...

class Name:
    """An agent or feature name, resolved once with :meth:`Gate.agent` / :meth:`Gate.feature`."""

    @property
    def name(self) -> str: ...

class Task:
    """A named task: a budget (micro-credits) and a call limit shared by every process of
    the pod that opens the same id; ``complete()`` records one Agentic Work Unit."""

    @property
    def id(self) -> str: ...
    @property
    def budget(self) -> int: ...
    @property
    def max_calls(self) -> int: ...
    @property
    def remaining(self) -> int: ...
    @property
    def completed(self) -> bool: ...
    def complete(self) -> None:
        """One work unit; later calls on the task are refused (TaskExhausted 'completed')."""

class Hold:
    """Credits held for one call. Commit it with the usage, or cancel it; as a context
    manager it is cancelled when the block is left unsettled."""

    @property
    def amount(self) -> int:
        """Credits held, in micro-credits."""
    @property
    def open(self) -> bool:
        """True until committed or cancelled."""
    @property
    def charged(self) -> Optional[int]:
        """What the commit charged (micro-credits); None while open or after a cancel."""
    def commit(self, input_tokens: int = 0, output_tokens: int = 0, outcomes: int = 0) -> int:
        """Commits the actual usage (and outcomes); returns the charge in micro-credits."""
    def commit_credits(self, micro_credits: int) -> int:
        """Commits an already-rated cost in micro-credits."""
    def cancel(self) -> None:
        """Everything held goes back (a no-op on a settled hold)."""
    def __enter__(self) -> Hold: ...
    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> bool: ...

class Pending:
    def wait(self) -> Hold: ...

class Gate:
    """A Python agent's handle on the sidecar's region."""

    def __init__(
        self,
        path: Union[str, os.PathLike[str], None] = None,
        *,
        agent: Optional[str] = None,
        tenant: Optional[str] = None,
        max_wait: float = 0.25,
    ) -> None: ...
    @classmethod
    def attach(
        cls,
        path: Union[str, os.PathLike[str]],
        *,
        agent: Optional[str] = None,
        tenant: Optional[str] = None,
        max_wait: float = 0.25,
    ) -> Gate: ...
    @classmethod
    def from_env(
        cls, *, agent: Optional[str] = None, tenant: Optional[str] = None, max_wait: float = 0.25
    ) -> Gate: ...
    @property
    def path(self) -> str: ...
    @property
    def agent_name(self) -> str: ...
    def tenant(self, name: str) -> Tenant: ...
    def model(self, name: str) -> Model: ...
    def agent(self, name: str) -> Name: ...
    def feature(self, name: str) -> Name: ...
    def open_task(
        self,
        task_id: str,
        *,
        budget: int,
        max_calls: int = 0,
        tenant: Union[str, Tenant, None] = None,
        agent: Union[str, Name, None] = None,
    ) -> Task: ...
    def report_outcomes(
        self,
        model: Union[str, Model, None] = None,
        *,
        outcomes: int,
        cost: Optional[int] = None,
        tier: TierName = "interactive",
        initiator: InitiatorName = "human",
        tenant: Union[str, Tenant, None] = None,
        task: Optional[Task] = None,
        agent: Union[str, Name, None] = None,
        feature: Union[str, Name, None] = None,
    ) -> int:
        """Reports outcomes on their own, rated by the model's per-outcome price."""
    def reserve(
        self,
        model: Union[str, Model, None] = None,
        *,
        input_tokens: int = 0,
        max_output_tokens: Optional[int] = None,
        cost: Optional[int] = None,
        tier: TierName = "interactive",
        initiator: InitiatorName = "human",
        tenant: Union[str, Tenant, None] = None,
        task: Optional[Task] = None,
        agent: Union[str, Name, None] = None,
        feature: Union[str, Name, None] = None,
        outcomes: int = 0,
    ) -> Hold:
        """Reserves credits for one call; raises Denied, TaskExhausted or ReserveError."""
    def reserve_async(
        self,
        model: Union[str, Model, None] = None,
        *,
        input_tokens: int = 0,
        max_output_tokens: Optional[int] = None,
        cost: Optional[int] = None,
        tier: TierName = "interactive",
        initiator: InitiatorName = "human",
        tenant: Union[str, Tenant, None] = None,
        task: Optional[Task] = None,
        agent: Union[str, Name, None] = None,
        feature: Union[str, Name, None] = None,
        outcomes: int = 0,
    ) -> Reserving:
        """``await`` it for the Hold (or ``async with`` it); never blocks the loop."""
    def _thread_lanes(self) -> int: ...

def _region_audit(path: Union[str, os.PathLike[str]]) -> dict[str, Any]: ...
def _fork_generation() -> int: ...

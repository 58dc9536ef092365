"""The OpenAI Agents SDK on Tollgate: run hooks that reserve every model call of an agent
run before it is sent and commit the usage the model reports, with the run as the task.

>>> from agents import Agent, Runner
>>> import tollgate, tollgate.agents
>>> gate = tollgate.Gate(tenant="acme")
>>> hooks = tollgate.agents.TollgateRunHooks(gate, task_id="ticket-4711",
...                                          budget=tollgate.credits(2))
>>> result = await Runner.run(agent, "Summarize the ticket", hooks=hooks)

Each call is attributed to the SDK agent's ``name`` (the Tollgate agent: its quotas apply,
the statement shows it; ``agent=`` fixes one name instead) and to ``feature=``. When the
hooks open the run's task (``budget=``), the run's final output completes it: one Agentic
Work Unit. A call over a limit raises ``Denied`` (or ``TaskExhausted`` once the run's
budget is spent) out of ``Runner.run`` before the model is called. The hold is sized from the
agent's model (its name: ``agent.model``, a model object's ``model``, or ``model=``
here), ``agent.model_settings.max_tokens`` and the input the SDK is about to send
(instructions and input items, counted by :mod:`tollgate.tokens`). The SDK calls no hook
when a model call fails: ``close()`` (or ``async with hooks:``) cancels holds such a run
left open, and a hook object that is garbage-collected cancels them too.
"""

from __future__ import annotations

import json
import uuid
from typing import Any, Dict, List, Optional

from agents import RunHooks

from . import tokens
from ._metering import Guard, commit
from ._native import Gate, Hold, Task

__all__ = ["TollgateRunHooks"]


class TollgateRunHooks(RunHooks):
    """Run hooks putting every model call of a run on ``gate``.

    ``task``: a :class:`tollgate.Task` the run spends; or ``budget`` (micro-credits, and
    ``max_calls``) to open one for this run, named ``task_id`` (default: a fresh id), which
    the run's final output completes. ``model``: the price-book name to reserve under when
    the agent's model has none (default: the SDK's default model).
    """

    def __init__(self, gate: Gate, *, task: Optional[Task] = None, task_id: Optional[str] = None,
                 budget: Optional[int] = None, max_calls: int = 0, tenant: Any = None,
                 tier: str = "interactive", initiator: str = "human", agent: Any = None,
                 feature: Any = None, model: Optional[str] = None,
                 count_tokens: Optional[tokens.Counter] = None) -> None:
        super().__init__()
        self._complete = False
        if task is None and budget is not None:
            task = gate.open_task(task_id or f"run-{uuid.uuid4().hex[:12]}", budget=budget,
                                  max_calls=max_calls, tenant=tenant, agent=agent)
            self._complete = True
        self.task = task
        self.model = model
        self._agent = agent
        self._guard = Guard(gate, tenant=tenant, tier=tier, initiator=initiator, task=task,
                            feature=feature, count_tokens=count_tokens)
        self._holds: Dict[int, List[Hold]] = {}

    def _model_of(self, agent: Any) -> str:
        m = getattr(agent, "model", None)
        if isinstance(m, str) and m:
            return m
        name = getattr(m, "model", None)
        if isinstance(name, str) and name:
            return name
        if self.model:
            return self.model
        from agents.models import get_default_model

        return get_default_model()

    async def on_llm_start(self, context: Any, agent: Any, system_prompt: Optional[str],
                           input_items: List[Any]) -> None:
        model = self._model_of(agent)
        text = (system_prompt or "") + json.dumps(input_items, default=str)
        settings = getattr(agent, "model_settings", None)
        most = getattr(settings, "max_tokens", None)
        name = self._agent or getattr(agent, "name", None) or None
        hold = await self._guard.reserve_async(model, self._guard.count(model, text), most,
                                               agent=name)
        self._holds.setdefault(id(agent), []).append(hold)

    async def on_llm_end(self, context: Any, agent: Any, response: Any) -> None:
        pending = self._holds.get(id(agent))
        if not pending:
            return
        hold = pending.pop(0)
        usage = response.usage
        commit(hold, usage.input_tokens, usage.output_tokens)

    async def on_agent_end(self, context: Any, agent: Any, output: Any) -> None:
        """The run produced its final output: the run's own task is complete (a work unit)."""
        if self._complete and self.task is not None and not self.task.completed:
            self.task.complete()

    def close(self) -> None:
        """Cancels the holds of model calls that never ended (a failed run)."""
        for pending in self._holds.values():
            for hold in pending:
                hold.cancel()
        self._holds.clear()

    async def __aenter__(self) -> "TollgateRunHooks":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        self.close()

    def __enter__(self) -> "TollgateRunHooks":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

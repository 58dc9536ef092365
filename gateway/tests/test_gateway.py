"""`tollgate gateway` in front of llm-upstream, with a real authority and sidecar: the
official SDKs and curl see the providers' formats, and every call's charge on the
tenant's statement is the usage the upstream reported (the model costs one micro-credit
per token, in and out)."""

import json
import subprocess
import time

import anthropic
import urllib.error
import urllib.request
import openai
import pytest

from conftest import MODEL

MSGS = [{"role": "user", "content": "one two three"}]


def oa(stack, key="gk-agent"):
    return openai.OpenAI(base_url=stack.gateway + "/v1", api_key=key, max_retries=0,
                         _strict_response_validation=True)


def an(stack, key="gk-agent"):
    return anthropic.Anthropic(base_url=stack.gateway, api_key=key, max_retries=0,
                               _strict_response_validation=True)


class Reply:
    def __init__(self, status, headers, body):
        self.status_code, self.headers, self.body = status, headers, body

    def json(self):
        return json.loads(self.body)


def post(url, body, headers):
    """A POST with the standard library: (status, lower-cased headers, body)."""
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                 headers={"content-type": "application/json", **headers})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return Reply(r.status, {k.lower(): v for k, v in r.headers.items()}, r.read())
    except urllib.error.HTTPError as e:
        return Reply(e.code, {k.lower(): v for k, v in e.headers.items()}, e.read())


def wait_until(cond, timeout, what):
    end = time.monotonic() + timeout
    while True:
        v = cond()
        if v:
            return v
        assert time.monotonic() < end, f"timed out waiting for {what}"
        time.sleep(0.05)


@pytest.fixture(scope="module")
def gw(stack):
    """The stack once a call goes through (tenant configured, book published, funded)."""
    def ok():
        r = post(stack.gateway + "/v1/chat/completions",
                 {"model": MODEL, "messages": MSGS, "max_tokens": 1},
                 {"authorization": "Bearer gk-human"})
        return r.status_code == 200
    wait_until(ok, 60, "the first call through the gateway")
    # That call on the statement, so later tests start from a settled one.
    wait_until(lambda: stack.statement("acme")[1] == 1, 30, "the first call's record")
    return stack


def charged(stack, tenant, before, calls):
    """Waits until the statement shows `calls` more calls than `before`; the increase."""
    def moved():
        total, n = stack.statement(tenant)
        return (total, n) if n >= before[1] + calls else None
    total, n = wait_until(moved, 30, f"{calls} more calls on {tenant}'s statement")
    assert n == before[1] + calls, (n, before)
    # A second read: nothing else arrives later.
    time.sleep(0.3)
    assert stack.statement(tenant) == (total, n)
    return total - before[0]


def test_every_call_is_charged_the_reported_usage(gw):
    before = gw.statement("acme")
    c, a = oa(gw), an(gw)
    used = 0
    r = c.chat.completions.create(model=MODEL, messages=MSGS, max_tokens=4)
    assert r.choices[0].message.content == "the of and to"
    used += r.usage.prompt_tokens + r.usage.completion_tokens
    # Streamed, the caller asking for usage.
    chunks = list(c.chat.completions.create(model=MODEL, messages=MSGS, max_tokens=6,
                                            stream=True, stream_options={"include_usage": True}))
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 6
    used += chunks[-1].usage.prompt_tokens + chunks[-1].usage.completion_tokens
    # Streamed without asking: the gateway asks for the usage and keeps it to itself.
    chunks = list(c.chat.completions.create(model=MODEL, messages=MSGS, max_tokens=5,
                                            stream=True))
    assert all(ch.choices for ch in chunks), "no usage chunk the caller did not ask for"
    assert "".join(ch.choices[0].delta.content or "" for ch in chunks) == "the of and to in"
    used += 3 + 5
    # No maximum: the gateway's default (64) is reserved and sent upstream.
    r = c.chat.completions.create(model=MODEL, messages=MSGS,
                                  extra_headers={"x-upstream-output-tokens": "100"})
    assert r.usage.completion_tokens == 64 and r.choices[0].finish_reason == "length"
    used += r.usage.prompt_tokens + r.usage.completion_tokens
    m = a.messages.create(model=MODEL, max_tokens=7, messages=MSGS)
    assert m.content[0].text == "the of and to in is it"
    used += m.usage.input_tokens + m.usage.output_tokens
    with a.messages.stream(model=MODEL, max_tokens=5, messages=MSGS,
                           extra_headers={"x-upstream-tokens-per-chunk": "2"}) as s:
        final = s.get_final_message()
    assert (final.usage.input_tokens, final.usage.output_tokens) == (3, 5)
    used += 3 + 5
    assert charged(gw, "acme", before, 6) == used


def test_curl_and_budget_headers(gw):
    def headers_present():
        out = subprocess.run(
            ["curl", "-sS", "-D", "-", "-o", "/dev/null", gw.gateway + "/v1/messages",
             "-H", "x-api-key: gk-human", "-H", "anthropic-version: 2023-06-01",
             "-H", "content-type: application/json",
             "-d", json.dumps({"model": MODEL, "max_tokens": 2, "messages": MSGS})],
            capture_output=True, text=True, check=True).stdout.lower()
        assert out.startswith("http/1.1 200"), out
        return out if "tollgate-credits-remaining:" in out else None
    head = wait_until(headers_present, 10, "budget headers (the sidecar's metrics read)")
    assert 'ratelimit-policy: "wallet";q=' in head
    assert 'ratelimit: "wallet";r=' in head
    assert "tollgate-credits-reserved:" in head


def test_unknown_key_is_401_in_each_format(gw):
    with pytest.raises(openai.AuthenticationError) as e:
        oa(gw, key="nope").chat.completions.create(model=MODEL, messages=MSGS, max_tokens=1)
    assert e.value.body["code"] == "invalid_api_key"
    with pytest.raises(anthropic.AuthenticationError) as e:
        an(gw, key="nope").messages.create(model=MODEL, max_tokens=1, messages=MSGS)
    assert e.value.body["error"]["type"] == "authentication_error"
    code = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}",
                           gw.gateway + "/v1/chat/completions", "-d", "{}"],
                          capture_output=True, text=True).stdout
    assert code == "401"


def test_a_stream_past_its_reservation_ends_at_the_budget_line(gw):
    before = gw.statement("acme")
    over = {"x-upstream-output-tokens": "50", "x-upstream-ignore-max": "true"}
    raw = oa(gw).chat.completions.with_raw_response.create(
        model=MODEL, messages=MSGS, max_tokens=10, stream=True,
        stream_options={"include_usage": True}, extra_headers=over)
    reserved = int(raw.headers["tollgate-credits-reserved"].replace(".", ""))
    chunks = list(raw.parse())
    text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    assert len(text.split()) == 10
    assert [ch.choices[0].finish_reason for ch in chunks if ch.choices][-1] == "length"
    assert chunks[-1].usage.completion_tokens == 10
    with an(gw).messages.stream(model=MODEL, max_tokens=10, messages=MSGS,
                                extra_headers=over) as s:
        final = s.get_final_message()
    assert final.stop_reason == "max_tokens"
    assert len(final.content[0].text.split()) == 10
    # A cut stream is charged its reported input (Anthropic's message_start; OpenAI's
    # estimate, what was reserved for it) and its whole reserved output.
    assert charged(gw, "acme", before, 2) == reserved + (3 + 10)


def test_a_spent_budget_is_429_with_retry_after(gw):
    # "tight" holds 5000 micro-credits: 8000 output tokens cannot be paid.
    body = {"model": MODEL, "messages": MSGS, "max_tokens": 8000}
    def denied():
        r = post(gw.gateway + "/v1/chat/completions", body,
                 {"authorization": "Bearer gk-tight"})
        return r if r.status_code == 429 else None
    r = wait_until(denied, 10, "a 429")
    assert int(r.headers["retry-after"]) >= 1
    err = r.json()["error"]
    assert err["message"].startswith("tollgate: denied by the ") and "tight" in err["message"]
    assert r.headers["ratelimit"].endswith(";r=0;t=" + r.headers["retry-after"])
    with pytest.raises(openai.RateLimitError):
        oa(gw, key="gk-tight").chat.completions.create(**body)
    with pytest.raises(anthropic.RateLimitError):
        an(gw, key="gk-tight").messages.create(**body)


def test_clamping_pays_what_is_left(gw):
    # "clampy" holds 5000 micro-credits: 8000 output tokens cannot be paid, 4000 can.
    body = {"model": MODEL, "messages": MSGS, "max_tokens": 8000}
    before = gw.statement("clampy")
    raw = an(gw, key="gk-clamp").messages.with_raw_response.create(
        **body, extra_headers={"x-upstream-output-tokens": "5"})
    clamped = int(raw.headers["tollgate-clamped-max-tokens"])
    assert raw.headers["tollgate-requested-max-tokens"] == "8000"
    assert 16 <= clamped < 8000 and 8000 % clamped == 0
    m = raw.parse()
    assert m.usage.output_tokens == 5
    assert charged(gw, "clampy", before, 1) == m.usage.input_tokens + 5


def test_responses_and_embeddings_are_charged_the_reported_usage(gw):
    before = gw.statement("acme")
    c = oa(gw)
    r = c.responses.create(model=MODEL, input="hello you", max_output_tokens=3)
    assert (r.output_text, r.status) == ("the of and", "completed")
    used = r.usage.input_tokens + r.usage.output_tokens
    with c.responses.stream(model=MODEL, input="hi", max_output_tokens=4) as s:
        final = s.get_final_response()
    assert final.output_text == "the of and to"
    used += final.usage.input_tokens + final.usage.output_tokens
    # The SDK asks for base64 and decodes it after parsing (see test_upstream_sdk.py).
    e = openai.OpenAI(base_url=gw.gateway + "/v1", api_key="gk-agent", max_retries=0
                      ).embeddings.create(model=MODEL, input=["a b", "c d e"])
    assert len(e.data) == 2
    used += e.usage.prompt_tokens
    assert charged(gw, "acme", before, 3) == used


def test_a_responses_stream_past_its_reservation_ends_incomplete(gw):
    before = gw.statement("acme")
    raw = oa(gw).responses.with_raw_response.create(
        model=MODEL, input="one two three", max_output_tokens=10, stream=True,
        extra_headers={"x-upstream-output-tokens": "50", "x-upstream-ignore-max": "true"})
    reserved = int(raw.headers["tollgate-credits-reserved"].replace(".", ""))
    events = list(raw.parse())
    assert [e.sequence_number for e in events] == list(range(len(events)))
    last = events[-1]
    assert last.type == "response.incomplete"
    assert last.response.incomplete_details.reason == "max_output_tokens"
    assert len(last.response.output[0].content[0].text.split()) == 10
    assert charged(gw, "acme", before, 1) == reserved


def test_a_burst_against_a_nearly_spent_budget_never_overspends(gw):
    import concurrent.futures as cf
    # "tight" holds 5000 micro-credits; 24 concurrent calls of ~420 each ask for twice that.
    body = {"model": MODEL, "messages": MSGS, "max_tokens": 400}
    def call(_):
        return post(gw.gateway + "/v1/chat/completions", body,
                    {"authorization": "Bearer gk-tight", "x-upstream-output-tokens": "400"}
                    ).status_code
    before = gw.statement("tight")
    with cf.ThreadPoolExecutor(24) as ex:
        codes = list(ex.map(call, range(24)))
    assert set(codes) <= {200, 429}, codes
    assert 429 in codes
    ok = codes.count(200)
    def settled():
        total, n = gw.statement("tight")
        return (total, n) if n >= before[1] + ok else None
    total, _ = wait_until(settled, 30, "the burst on the statement")
    time.sleep(0.3)
    total, _ = gw.statement("tight")
    assert total <= 5000, f"{ok} calls charged {total} of a 5000 grant"


def test_kill_9_mid_stream_returns_the_reservation_once(gw):
    import os
    import signal
    p, url = gw.spawn_gateway("gateway-killed")
    try:
        before = gw.statement("acme")
        reclaimed = gw.metric("tollgate_sidecar_processes_reclaimed_total")
        req = urllib.request.Request(
            url + "/v1/chat/completions", method="POST",
            data=json.dumps({"model": MODEL, "messages": MSGS, "max_tokens": 50,
                             "stream": True}).encode(),
            headers={"authorization": "Bearer gk-human", "content-type": "application/json",
                     "x-upstream-stall-after": "2"})
        resp = urllib.request.urlopen(req, timeout=10)
        assert resp.headers["tollgate-credits-reserved"]
        seen = 0
        while seen < 2:
            line = resp.readline().decode()
            if '"content":"' in line and '"content":""' not in line:
                seen += 1
        # The gateway dies holding the call's reservation (the stream is stalled).
        os.kill(p.proc.pid, signal.SIGKILL)
        p.proc.wait()
        resp.close()
        wait_until(lambda: gw.metric("tollgate_sidecar_processes_reclaimed_total") > reclaimed,
                   30, "the sidecar reclaiming the dead gateway's holds")
        # Nothing was committed for it: the next call is the only one on the statement.
        r = oa(gw).chat.completions.create(model=MODEL, messages=MSGS, max_tokens=2)
        assert charged(gw, "acme", before, 1) == r.usage.prompt_tokens + r.usage.completion_tokens
    finally:
        p.stop()


def test_lower_tiers_degrade_before_the_wall(gw):
    from conftest import CHEAP
    body = {"model": MODEL, "messages": MSGS, "max_tokens": 2}
    bg = {"authorization": "Bearer gk-burny-bg"}
    r = post(gw.gateway + "/v1/chat/completions", body, bg)
    assert r.status_code == 200 and "tollgate-degraded" not in r.headers
    # Spend 10000 of the 100000: at that burn the authority projects the rest gone within
    # 9 hours, inside the gateway's 10 h horizon (and plenty is left for every lane).
    # Spent by the background key itself, so the budget the pod holds for it sits in its
    # own lanes. (A call may wait for the pod's lease to grow: retried on 429.)
    for _ in range(10):
        def spent():
            a = post(gw.gateway + "/v1/chat/completions",
                     {"model": MODEL, "messages": MSGS, "max_tokens": 1000},
                     dict(bg, **{"x-upstream-output-tokens": "1000"}))
            assert a.status_code in (200, 429), a.body
            return a.status_code == 200
        wait_until(spent, 20, "an interactive call of 1000 tokens")
    def routed():
        r = post(gw.gateway + "/v1/chat/completions", body, bg)
        assert r.status_code == 200, r.body
        return r if r.headers.get("tollgate-degraded") else None
    r = wait_until(routed, 30, "background calls routed to the cheaper model")
    assert r.headers["tollgate-degraded"] == f"{MODEL} -> {CHEAP}"
    assert r.json()["model"] == CHEAP
    # A model with no cheaper route is refused for the background tier ...
    other = post(gw.gateway + "/v1/chat/completions", dict(body, model="no-route-model"), bg)
    assert other.status_code == 429 and other.headers["tollgate-degraded"] == "refused"
    assert "projected to run out" in other.json()["error"]["message"]
    assert int(other.headers["retry-after"]) >= 1
    # ... while interactive calls are left alone: not routed, not refused by the rule. (The
    # budget itself may still refuse one for a while: what the pod holds of it can sit in
    # the background key's lanes until the sidecar takes it back.)
    i = post(gw.gateway + "/v1/chat/completions", body, {"authorization": "Bearer gk-burny"})
    assert "tollgate-degraded" not in i.headers, i.body
    if i.status_code == 200:
        assert i.json()["model"] == MODEL
    else:
        assert i.status_code == 429 and "projected" not in i.json()["error"]["message"]

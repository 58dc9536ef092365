//! The server over real HTTP: routing, authentication, the journal, and the stream
//! controls (fail, drop, stall with the client leaving).

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::rt::TokioIo;
use llm_upstream::{Config, Outcome, Running};
use serde_json::{Value, json};
use tokio::net::TcpStream;

type Sender = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

async fn connect(up: &Running) -> Sender {
    let tcp = TcpStream::connect(up.addr).await.unwrap();
    let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .unwrap();
    tokio::spawn(conn);
    send
}

fn post(path: &str, headers: &[(&str, &str)], body: &Value) -> Request<Full<Bytes>> {
    let mut b = Request::post(path).header("host", "upstream");
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(Full::new(Bytes::from(body.to_string()))).unwrap()
}

async fn call(up: &Running, req: Request<Full<Bytes>>) -> (u16, Result<String, String>) {
    let mut s = connect(up).await;
    let resp = s.send_request(req).await.unwrap();
    let status = resp.status().as_u16();
    let body = resp
        .into_body()
        .collect()
        .await
        .map(|b| String::from_utf8_lossy(&b.to_bytes()).to_string())
        .map_err(|e| e.to_string());
    (status, body)
}

async fn server(cfg: Config) -> Running {
    llm_upstream::start(cfg).await.unwrap()
}

fn chat(stream: bool) -> Value {
    json!({"model": "gpt-4o", "max_tokens": 6, "stream": stream,
           "stream_options": {"include_usage": true},
           "messages": [{"role": "user", "content": "one two three"}]})
}

#[tokio::test]
async fn a_wrong_key_gets_401_in_each_providers_format() {
    let up = server(Config {
        api_key: Some("sk-up".into()),
        ..Config::default()
    })
    .await;
    let (s, b) = call(&up, post("/v1/chat/completions", &[], &chat(false))).await;
    assert_eq!(s, 401);
    assert!(b.unwrap().contains("invalid_api_key"));
    let msg = json!({"model": "c", "max_tokens": 3, "messages": []});
    let (s, b) = call(&up, post("/v1/messages", &[("x-api-key", "nope")], &msg)).await;
    assert_eq!(s, 401);
    assert!(b.unwrap().contains("authentication_error"));
    let (s, _) = call(&up, post("/v1/messages", &[("x-api-key", "sk-up")], &msg)).await;
    assert_eq!(s, 200);
    let j = up.journal.records();
    assert_eq!(j.len(), 3);
    assert_eq!(j[2].x_api_key.as_deref(), Some("sk-up"));
}

#[tokio::test]
async fn bad_requests_are_400_and_missing_max_tokens_is_refused_like_anthropic() {
    let up = server(Config::default()).await;
    let (s, b) = call(
        &up,
        post("/v1/messages", &[], &json!({"model": "c", "messages": []})),
    )
    .await;
    assert_eq!(s, 400);
    assert!(b.unwrap().contains("max_tokens"));
    let (s, _) = call(
        &up,
        post(
            "/v1/chat/completions",
            &[("x-upstream-output-tokens", "x")],
            &chat(false),
        ),
    )
    .await;
    assert_eq!(s, 400);
    let (s, _) = call(&up, post("/v1/nothing", &[], &json!({}))).await;
    assert_eq!(s, 404);
}

#[tokio::test]
async fn a_whole_reply_reports_what_it_sent() {
    let up = server(Config::default()).await;
    let (s, b) = call(
        &up,
        post(
            "/v1/chat/completions",
            &[("x-upstream-output-tokens", "4")],
            &chat(false),
        ),
    )
    .await;
    assert_eq!(s, 200);
    let v: Value = serde_json::from_str(&b.unwrap()).unwrap();
    assert_eq!(v["usage"]["prompt_tokens"], 3);
    assert_eq!(v["usage"]["completion_tokens"], 4);
    assert_eq!(v["choices"][0]["message"]["content"], "the of and to");
    let r = &up.journal.records()[0];
    assert_eq!((r.output_tokens_sent, r.outcome), (4, Outcome::Complete));
}

#[tokio::test]
async fn stream_controls_fail_drop_and_stall() {
    let up = server(Config::default()).await;
    let (_, b) = call(
        &up,
        post(
            "/v1/chat/completions",
            &[("x-upstream-fail-after", "2")],
            &chat(true),
        ),
    )
    .await;
    let b = b.unwrap();
    assert!(b.contains("\"error\""), "{b}");
    assert!(!b.contains("[DONE]"));

    let (_, b) = call(
        &up,
        post(
            "/v1/chat/completions",
            &[("x-upstream-drop-after", "3")],
            &chat(true),
        ),
    )
    .await;
    assert!(b.is_err(), "a dropped stream must not end cleanly");

    // A stall holds the stream open; the client leaving ends it.
    let mut s = connect(&up).await;
    let resp = s
        .send_request(post(
            "/v1/chat/completions",
            &[("x-upstream-stall-after", "1")],
            &chat(true),
        ))
        .await
        .unwrap();
    let mut body = resp.into_body();
    let first = body.frame().await.unwrap().unwrap();
    assert!(first.is_data());
    let more = tokio::time::timeout(Duration::from_millis(300), async {
        body.frame().await.unwrap().unwrap();
        body.frame().await
    })
    .await;
    assert!(
        more.is_err(),
        "the stream should stall after the first token"
    );
    drop(body);
    drop(s);
    let mut outcomes = vec![];
    for _ in 0..100 {
        outcomes = up.journal.records().iter().map(|r| r.outcome).collect();
        if outcomes.len() == 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        outcomes,
        vec![Outcome::ErrorEvent, Outcome::Dropped, Outcome::Stalled]
    );
    let stats = up.journal.stats();
    assert_eq!(stats.output_tokens, 2 + 3 + 1);
    assert_eq!(stats.input_tokens, 0, "no stream reported its usage");
}

#[tokio::test]
async fn a_stream_cut_at_its_maximum_says_so_in_every_format() {
    let up = server(Config::default()).await;
    let h = [("x-upstream-output-tokens", "10")];
    let (_, b) = call(&up, post("/v1/chat/completions", &h, &chat(true))).await;
    let b = b.unwrap();
    assert!(b.contains("\"finish_reason\":\"length\""));
    assert!(b.contains("\"completion_tokens\":6"));
    assert!(b.ends_with("data: [DONE]\n\n"));
    let msg = json!({"model": "c", "max_tokens": 2, "stream": true,
                     "messages": [{"role": "user", "content": "x"}]});
    let (_, b) = call(&up, post("/v1/messages", &h, &msg)).await;
    let b = b.unwrap();
    assert!(b.contains("\"stop_reason\":\"max_tokens\""));
    assert!(b.contains("\"usage\":{\"output_tokens\":2}"));
    let resp = json!({"model": "gpt-4o", "max_output_tokens": 3, "stream": true, "input": "x"});
    let (_, b) = call(&up, post("/v1/responses", &h, &resp)).await;
    assert!(b.unwrap().contains("event: response.incomplete\n"));
    let over = [
        ("x-upstream-output-tokens", "10"),
        ("x-upstream-ignore-max", "1"),
    ];
    let (_, b) = call(&up, post("/v1/messages", &over, &msg)).await;
    assert!(b.unwrap().contains("\"usage\":{\"output_tokens\":10}"));
}

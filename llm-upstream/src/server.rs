//! The HTTP server: routing, authentication, whole replies and the stream driver.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, Limited, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::{HeaderMap, Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::anthropic;
use crate::config::Config;
use crate::controls::Controls;
use crate::errors::{self, Dialect};
use crate::journal::{Journal, Outcome, Record};
use crate::openai;
use crate::reply::{Plan, count_input, text};
use crate::sse::StreamFormat;

/// Largest request body accepted.
const MAX_BODY: usize = 16 << 20;
/// Longest a stalled stream is held open without a client going away.
const MAX_STALL: Duration = Duration::from_secs(600);

type Body = BoxBody<Bytes, std::io::Error>;

/// A server serving in the background.
#[derive(Debug)]
pub struct Running {
    /// The bound address.
    pub addr: SocketAddr,
    /// What it was asked and reported.
    pub journal: Journal,
    accept: JoinHandle<()>,
}

impl Running {
    /// `http://ADDR`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops accepting connections (connections already open finish on their own).
    pub fn stop(&self) {
        self.accept.abort();
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

struct State {
    cfg: Config,
    journal: Journal,
    next_id: AtomicU64,
}

/// Binds `cfg.listen` and serves in the current tokio runtime.
pub async fn start(cfg: Config) -> std::io::Result<Running> {
    let listener = TcpListener::bind(cfg.listen).await?;
    let addr = listener.local_addr()?;
    let journal = Journal::new(cfg.journal);
    let state = Arc::new(State {
        cfg,
        journal: journal.clone(),
        next_id: AtomicU64::new(1),
    });
    let accept = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                // Out of descriptors or similar: back off instead of spinning.
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            };
            let _ = stream.set_nodelay(true);
            let state = state.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req| handle(state.clone(), req));
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    Ok(Running {
        addr,
        journal,
        accept,
    })
}

fn full(status: StatusCode, content_type: &str, body: impl Into<Bytes>) -> Response<Body> {
    let mut r = Response::new(
        Full::new(body.into())
            .map_err(|e: Infallible| match e {})
            .boxed(),
    );
    *r.status_mut() = status;
    r.headers_mut()
        .insert("content-type", content_type.parse().expect("static"));
    r
}

fn json_response(status: StatusCode, v: &Value, request_id: &str) -> Response<Body> {
    let mut r = full(status, "application/json", v.to_string());
    if let Ok(id) = request_id.parse() {
        r.headers_mut().insert("x-request-id", id);
    }
    if let Ok(id) = request_id.parse() {
        r.headers_mut().insert("request-id", id);
    }
    r
}

fn error(d: Dialect, status: u16, message: &str, request_id: &str) -> Response<Body> {
    let code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    json_response(
        code,
        &errors::body(d, status, message, request_id),
        request_id,
    )
}

fn header(h: &HeaderMap, name: &str) -> Option<String> {
    h.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned)
}

fn key_ok(cfg: &Config, h: &HeaderMap) -> bool {
    let Some(want) = &cfg.api_key else {
        return true;
    };
    let bearer =
        header(h, "authorization").and_then(|a| a.strip_prefix("Bearer ").map(str::to_owned));
    bearer.as_deref() == Some(want.as_str()) || header(h, "x-api-key").as_deref() == Some(want)
}

async fn handle(state: Arc<State>, req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    let path = req.uri().path().to_owned();
    let n = state.next_id.fetch_add(1, Ordering::Relaxed);
    let rid = format!("req-{n}");
    let resp = match (req.method(), path.as_str()) {
        (&Method::GET, "/healthz") => full(StatusCode::OK, "text/plain", "ok\n"),
        (&Method::GET, "/_upstream/requests") => json_response(
            StatusCode::OK,
            &serde_json::to_value(state.journal.records()).unwrap_or_default(),
            &rid,
        ),
        (&Method::GET, "/_upstream/stats") => json_response(
            StatusCode::OK,
            &serde_json::to_value(state.journal.stats()).unwrap_or_default(),
            &rid,
        ),
        (&Method::POST, "/_upstream/reset") => {
            state.journal.reset();
            json_response(StatusCode::OK, &json!({"reset": true}), &rid)
        }
        (
            &Method::POST,
            "/v1/chat/completions" | "/v1/responses" | "/v1/embeddings" | "/v1/messages",
        ) => generate(&state, req, &path, n).await,
        _ => error(
            Dialect::of_path(&path),
            404,
            &format!("no route for {} {path}", req.method()),
            &rid,
        ),
    };
    Ok(resp)
}

/// What the endpoint-specific part of a request decided.
struct Parsed {
    model: String,
    max: Option<u64>,
    stream: bool,
}

fn parse(path: &str, body: &Value) -> Result<Parsed, String> {
    let model = openai::model(body)?;
    let stream = openai::wants_stream(body);
    let max = match path {
        "/v1/chat/completions" => openai::chat_max(body)?,
        "/v1/responses" => openai::responses_max(body)?,
        "/v1/messages" => Some(anthropic::max_tokens(body)?),
        _ => None,
    };
    if matches!(path, "/v1/chat/completions" | "/v1/messages")
        && !body.get("messages").is_some_and(Value::is_array)
    {
        return Err("`messages` is required and must be an array".into());
    }
    Ok(Parsed {
        model,
        max,
        stream: stream && path != "/v1/embeddings",
    })
}

async fn generate(state: &State, req: Request<Incoming>, path: &str, n: u64) -> Response<Body> {
    let d = Dialect::of_path(path);
    let rid = format!("req-{n}");
    let headers = req.headers().clone();
    let mut record = Record {
        id: rid.clone(),
        path: path.to_owned(),
        model: None,
        stream: false,
        authorization: header(&headers, "authorization"),
        x_api_key: header(&headers, "x-api-key"),
        max_tokens: None,
        input_tokens: 0,
        output_tokens_sent: 0,
        usage_reported: false,
        status: 200,
        outcome: Outcome::Failed,
    };
    let fail = |record: &mut Record, status: u16, msg: &str| {
        record.status = status;
        state.journal.push(record.clone());
        error(d, status, msg, &rid)
    };
    if !key_ok(&state.cfg, &headers) {
        return fail(&mut record, 401, "Incorrect API key provided");
    }
    let controls = match Controls::from_headers(&headers, &state.cfg) {
        Ok(c) => c,
        Err(e) => return fail(&mut record, 400, &e.to_string()),
    };
    let bytes = match Limited::new(req.into_body(), MAX_BODY).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => return fail(&mut record, 400, &format!("cannot read the body: {e}")),
    };
    let body: Value = match serde_json::from_slice(&bytes) {
        Ok(v) => v,
        Err(e) => return fail(&mut record, 400, &format!("body is not JSON: {e}")),
    };
    let p = match parse(path, &body) {
        Ok(p) => p,
        Err(e) => return fail(&mut record, 400, &e),
    };
    record.model = Some(p.model.clone());
    record.stream = p.stream;
    record.max_tokens = p.max;
    if controls.latency_ms > 0 {
        tokio::time::sleep(Duration::from_millis(controls.latency_ms)).await;
    }
    if let Some(s) = controls.fail_status {
        return fail(&mut record, s, "the upstream was told to fail this request");
    }
    let mut plan = Plan::new(
        p.max,
        count_input(&body),
        &controls,
        state.cfg.default_output_tokens,
    );
    if path == "/v1/embeddings" {
        plan.output_tokens = 0;
    }
    record.input_tokens = plan.input_tokens;
    let created = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (id, format): (String, Box<dyn StreamFormat>) = match path {
        "/v1/chat/completions" => {
            let c = openai::Chat {
                id: format!("chatcmpl-{n}"),
                model: p.model.clone(),
                created,
                plan,
                include_usage: openai::Chat::include_usage(&body),
            };
            (c.id.clone(), Box::new(c))
        }
        "/v1/responses" => {
            let r = openai::Responses {
                id: format!("resp_{n}"),
                item_id: format!("msg_{n}"),
                model: p.model.clone(),
                created,
                plan,
                max_output_tokens: p.max,
                seq: 0,
                sent: String::new(),
            };
            (r.id.clone(), Box::new(r))
        }
        "/v1/messages" => {
            let m = anthropic::Message {
                id: format!("msg_{n:024}"),
                model: p.model.clone(),
                plan,
            };
            (m.id.clone(), Box::new(m))
        }
        _ => {
            record.id = format!("emb-{n}");
            return match openai::embeddings(&body, &p.model, &plan) {
                Ok(v) => {
                    record.outcome = Outcome::Complete;
                    record.usage_reported = true;
                    state.journal.push(record);
                    json_response(StatusCode::OK, &v, &rid)
                }
                Err(e) => fail(&mut record, 400, &e),
            };
        }
    };
    record.id = id;
    if p.stream {
        return stream(state.journal.clone(), record, format, plan, controls, &rid);
    }
    let body = whole(path, &body, &p, n, created, plan);
    record.outcome = Outcome::Complete;
    record.usage_reported = true;
    record.output_tokens_sent = plan.output_tokens;
    state.journal.push(record);
    json_response(StatusCode::OK, &body, &rid)
}

fn whole(path: &str, body: &Value, p: &Parsed, n: u64, created: u64, plan: Plan) -> Value {
    match path {
        "/v1/chat/completions" => openai::Chat {
            id: format!("chatcmpl-{n}"),
            model: p.model.clone(),
            created,
            plan,
            include_usage: openai::Chat::include_usage(body),
        }
        .body(),
        "/v1/responses" => openai::Responses {
            id: format!("resp_{n}"),
            item_id: format!("msg_{n}"),
            model: p.model.clone(),
            created,
            plan,
            max_output_tokens: p.max,
            seq: 0,
            sent: String::new(),
        }
        .body(),
        _ => anthropic::Message {
            id: format!("msg_{n:024}"),
            model: p.model.clone(),
            plan,
        }
        .body(),
    }
}

type Tx = mpsc::Sender<Result<Frame<Bytes>, std::io::Error>>;

/// Starts the stream driver and returns the response whose body it feeds.
fn stream(
    journal: Journal,
    record: Record,
    format: Box<dyn StreamFormat>,
    plan: Plan,
    controls: Controls,
    rid: &str,
) -> Response<Body> {
    let (tx, rx) = mpsc::channel(16);
    tokio::spawn(drive(journal, record, format, plan, controls, tx));
    let body = StreamBody::new(tokio_stream::wrappers::ReceiverStream::new(rx));
    let mut r = Response::new(BodyExt::boxed(body));
    let h = r.headers_mut();
    h.insert("content-type", "text/event-stream".parse().expect("static"));
    h.insert("cache-control", "no-cache".parse().expect("static"));
    if let Ok(id) = rid.parse() {
        h.insert("x-request-id", id);
    }
    if let Ok(id) = rid.parse() {
        h.insert("request-id", id);
    }
    r
}

async fn send(tx: &Tx, b: Bytes) -> bool {
    tx.send(Ok(Frame::data(b))).await.is_ok()
}

/// What a control says to do once `sent` tokens are out.
fn interrupt(c: &Controls, sent: u64) -> Option<Outcome> {
    let hit = |t: Option<u64>| t.is_some_and(|t| sent >= t);
    if hit(c.fail_after) {
        Some(Outcome::ErrorEvent)
    } else if hit(c.drop_after) {
        Some(Outcome::Dropped)
    } else if hit(c.stall_after) {
        Some(Outcome::Stalled)
    } else {
        None
    }
}

async fn drive(
    journal: Journal,
    mut record: Record,
    mut f: Box<dyn StreamFormat>,
    plan: Plan,
    c: Controls,
    tx: Tx,
) {
    record.outcome = run_stream(&mut record, f.as_mut(), plan, &c, &tx).await;
    journal.push(record);
}

async fn run_stream(
    record: &mut Record,
    f: &mut dyn StreamFormat,
    plan: Plan,
    c: &Controls,
    tx: &Tx,
) -> Outcome {
    for b in f.start() {
        if !send(tx, b).await {
            return Outcome::ClientGone;
        }
    }
    let mut sent = 0;
    loop {
        if let Some(stop) = interrupt(c, sent) {
            return match stop {
                Outcome::ErrorEvent => {
                    let _ = send(tx, f.error("Overloaded")).await;
                    stop
                }
                Outcome::Dropped => {
                    let _ = tx
                        .send(Err(std::io::Error::other("connection dropped on purpose")))
                        .await;
                    stop
                }
                _ => {
                    let _ = tokio::time::timeout(MAX_STALL, tx.closed()).await;
                    stop
                }
            };
        }
        if sent >= plan.output_tokens {
            break;
        }
        if sent > 0 && c.token_interval_us > 0 {
            tokio::time::sleep(Duration::from_micros(c.token_interval_us)).await;
        }
        let to = (sent + c.tokens_per_chunk).min(plan.output_tokens);
        if !send(tx, f.delta(&text(sent, to))).await {
            return Outcome::ClientGone;
        }
        sent = to;
        record.output_tokens_sent = sent;
    }
    for b in f.finish() {
        if !send(tx, b).await {
            return Outcome::ClientGone;
        }
    }
    record.usage_reported = true;
    Outcome::Complete
}

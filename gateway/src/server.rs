//! The HTTP server: authenticate, reserve, forward, meter, commit.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use bytes::Bytes;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tollgate_client::{AgentName, Call, Feature, Gate, Model, Reservation, ReserveError, TenantId};
use tollgate_core::{Credits, Usage};

use crate::api::{Api, Dialect, Meter, Step};
use crate::budget::Budgets;
use crate::config::{Config, KeyPolicy, Upstream};
use crate::estimate;
use crate::sse::Splitter;

/// Most bytes of a request body.
pub const MAX_REQUEST_BYTES: usize = 32 << 20;
/// Most bytes of a whole (non-streamed) upstream response.
pub const MAX_RESPONSE_BYTES: usize = 64 << 20;
/// Most distinct model names resolved (each is kept for the process's life).
const MAX_MODELS: usize = 1024;

/// Response header: the maximum output tokens the request was clamped to.
pub const CLAMPED: &str = "tollgate-clamped-max-tokens";
/// Response header: the maximum output tokens the request asked for (with [`CLAMPED`]).
pub const REQUESTED: &str = "tollgate-requested-max-tokens";
/// Response header: the tenant's remaining credits (the pod's lease, see [`crate::budget`]).
pub const REMAINING: &str = "tollgate-credits-remaining";
/// Response header: the call was degraded (`MODEL -> CHEAPER`, or `refused`).
pub const DEGRADED: &str = "tollgate-degraded";
/// Response header: the credits reserved for the call.
pub const RESERVED: &str = "tollgate-credits-reserved";

/// Handles resolved once per name in the region.
#[derive(Default)]
struct Resolved {
    tenants: HashMap<String, TenantId>,
    agents: HashMap<String, AgentName>,
    features: HashMap<String, Feature>,
    models: HashMap<String, &'static Model>,
}

/// One worker thread's gateway: the state all workers share, and an HTTP client of its
/// own (a client's pooled connections belong to the runtime that made them).
///
/// Each worker runs a single-threaded runtime, so a call is reserved, forwarded and
/// committed on one thread: a commit on the reserving thread is recorded at once, while a
/// commit from another thread waits for the owner thread's next reserve (see the client's
/// `protocol` docs), which an idle worker might not make for a long time.
pub struct Gateway {
    gate: &'static Gate,
    cfg: Arc<Config>,
    http: reqwest::Client,
    resolved: Arc<Mutex<Resolved>>,
    budgets: Arc<Budgets>,
    reserve_wait: Duration,
}

fn http_client() -> anyhow::Result<reqwest::Client> {
    // reqwest is built without a bundled crypto provider; use ring, as the authority
    // does. Installing twice is harmless.
    let _ = rustls::crypto::ring::default_provider().install_default();
    Ok(reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(10))
        .redirect(reqwest::redirect::Policy::none())
        .build()?)
}

/// The call's handles.
#[derive(Clone, Copy)]
struct Handles {
    tenant: TenantId,
    agent: Option<AgentName>,
    feature: Option<Feature>,
    model: &'static Model,
}

/// An error response in a provider's format.
pub fn error(d: Dialect, status: StatusCode, kind: &str, message: &str) -> Response {
    let body = match d {
        Dialect::OpenAi => json!({"error": {"message": message, "type": kind, "param": null,
            "code": if status == StatusCode::UNAUTHORIZED { json!("invalid_api_key") } else { json!(kind) }}}),
        Dialect::Anthropic => json!({"type": "error", "error": {"type": kind, "message": message}}),
    };
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

fn kind_for(d: Dialect, status: StatusCode) -> &'static str {
    match (d, status.as_u16()) {
        (Dialect::OpenAi, 401) => "invalid_request_error",
        (Dialect::OpenAi, 429) => "insufficient_quota",
        (Dialect::OpenAi, 400..=499) => "invalid_request_error",
        (Dialect::OpenAi, _) => "server_error",
        (Dialect::Anthropic, 401) => "authentication_error",
        (Dialect::Anthropic, 404) => "not_found_error",
        (Dialect::Anthropic, 429) => "rate_limit_error",
        (Dialect::Anthropic, 400..=499) => "invalid_request_error",
        (Dialect::Anthropic, _) => "api_error",
    }
}

fn fail(d: Dialect, status: StatusCode, message: &str) -> Response {
    error(d, status, kind_for(d, status), message)
}

/// The caller's key: `x-api-key` (Anthropic) or `Authorization: Bearer` (OpenAI).
fn caller_key(headers: &HeaderMap) -> Option<&str> {
    if let Some(k) = headers.get("x-api-key").and_then(|v| v.to_str().ok()) {
        return Some(k.trim());
    }
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim)
}

/// Request headers not sent upstream: hop-by-hop, the ones the gateway sets, the caller's
/// credentials (unless the upstream forwards them) and `accept-encoding` (the gateway
/// reads the body, so it asks for it uncompressed).
fn forwardable(name: &HeaderName) -> bool {
    !matches!(
        name.as_str(),
        "host"
            | "content-length"
            | "content-type"
            | "authorization"
            | "x-api-key"
            | "connection"
            | "keep-alive"
            | "transfer-encoding"
            | "te"
            | "trailer"
            | "upgrade"
            | "proxy-authorization"
            | "proxy-connection"
            | "accept-encoding"
    )
}

/// Response headers not copied from upstream.
fn copyable(name: &HeaderName) -> bool {
    !matches!(
        name.as_str(),
        "content-length"
            | "connection"
            | "keep-alive"
            | "transfer-encoding"
            | "te"
            | "trailer"
            | "upgrade"
    )
}

impl Gateway {
    /// A gateway over `gate` (leaked: reservations outlive any one request) with `cfg`.
    pub fn new(
        gate: Gate,
        cfg: Config,
        budgets: Arc<Budgets>,
        reserve_wait: Duration,
    ) -> anyhow::Result<Gateway> {
        Ok(Gateway {
            gate: Box::leak(Box::new(gate)),
            cfg: Arc::new(cfg),
            http: http_client()?,
            resolved: Arc::new(Mutex::new(Resolved::default())),
            budgets,
            reserve_wait,
        })
    }

    /// The gateway of another worker thread: the same gate, config and handles, its own
    /// HTTP client (call it on that thread).
    pub fn worker(&self) -> anyhow::Result<Gateway> {
        Ok(Gateway {
            gate: self.gate,
            cfg: self.cfg.clone(),
            http: http_client()?,
            resolved: self.resolved.clone(),
            budgets: self.budgets.clone(),
            reserve_wait: self.reserve_wait,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// The degrade rule, if configured.
    pub fn degrade(&self) -> Option<&crate::config::Degrade> {
        self.cfg.degrade.as_ref()
    }

    /// The budget readings shared with the pollers.
    pub fn budgets(&self) -> &Arc<Budgets> {
        &self.budgets
    }

    /// The HTTP client (also used to poll the sidecar's metrics).
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// Serves the routes on `listener` until `stop` resolves; in-flight calls finish (and
    /// commit) first. Connections are `TCP_NODELAY`: streamed events go out as they come
    /// (with Nagle's algorithm a small event waits for the client's delayed ACK, ~40 ms).
    pub async fn serve(
        self: Arc<Self>,
        listener: tokio::net::TcpListener,
        stop: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        use axum::serve::ListenerExt as _;
        let listener = listener.tap_io(|tcp| {
            if let Err(e) = tcp.set_nodelay(true) {
                tracing::debug!(error = %e, "cannot set TCP_NODELAY");
            }
        });
        axum::serve(listener, self.router())
            .with_graceful_shutdown(stop)
            .await
    }

    /// The routes.
    pub fn router(self: Arc<Self>) -> Router {
        Router::new()
            .route("/v1/chat/completions", post(chat))
            .route("/v1/messages", post(messages))
            .route("/v1/responses", post(responses))
            .route("/v1/embeddings", post(embeddings))
            .route("/healthz", get(|| async { "ok\n" }))
            .with_state(self)
            .layer(axum::extract::DefaultBodyLimit::max(MAX_REQUEST_BYTES))
    }

    fn handles(&self, p: &KeyPolicy, model: &str) -> Result<Handles, ReserveError> {
        let mut r = self.resolved.lock().unwrap_or_else(|e| e.into_inner());
        let tenant = match r.tenants.get(&p.tenant) {
            Some(t) => *t,
            None => {
                let t = self.gate.tenant(&p.tenant)?;
                r.tenants.insert(p.tenant.clone(), t);
                t
            }
        };
        let agent = match &p.agent {
            None => None,
            Some(a) => Some(match r.agents.get(a) {
                Some(h) => *h,
                None => {
                    let h = self.gate.agent(a)?;
                    r.agents.insert(a.clone(), h);
                    h
                }
            }),
        };
        let feature = match &p.feature {
            None => None,
            Some(f) => Some(match r.features.get(f) {
                Some(h) => *h,
                None => {
                    let h = self.gate.feature(f)?;
                    r.features.insert(f.clone(), h);
                    h
                }
            }),
        };
        let model = match r.models.get(model) {
            Some(m) => *m,
            None => {
                let m = self.gate.model(model)?;
                // Reservations borrow the handle for as long as the call runs (a stream
                // may outlive the request), so it lives for the process: one per model name
                // the price book knows, bounded.
                if r.models.len() >= MAX_MODELS {
                    return Err(ReserveError::PriceBook(format!(
                        "more than {MAX_MODELS} distinct models"
                    )));
                }
                let m: &'static Model = Box::leak(Box::new(m));
                r.models.insert(model.to_owned(), m);
                m
            }
        };
        Ok(Handles {
            tenant,
            agent,
            feature,
            model,
        })
    }

    /// One reserve for `max` output tokens. It never blocks a worker for long: a dry lane
    /// (the sidecar asked for a top-up, e.g. the first call of a new tenant, tier or agent
    /// name) is retried after short async sleeps (1, 2, 4 ... 32 ms) for up to
    /// `reserve_wait`, then once with the region's own bounded wait (at most 10 ms, on the
    /// worker thread), which names the limit if it refuses.
    async fn reserve_once(
        &self,
        h: Handles,
        p: &KeyPolicy,
        input: u64,
        max: u64,
    ) -> Result<Reservation<'static>, ReserveError> {
        let gate: &'static Gate = self.gate;
        let call = move |wait: bool| {
            let mut c = Call::model(h.model)
                .tenant(h.tenant)
                .input_tokens(input)
                .max_output_tokens(max)
                .tier(p.tier)
                .initiator(p.initiator)
                .wait(wait);
            if let Some(a) = h.agent {
                c = c.agent(a);
            }
            if let Some(f) = h.feature {
                c = c.feature(f);
            }
            c
        };
        let deadline = tokio::time::Instant::now() + self.reserve_wait;
        let mut nap = Duration::from_millis(1);
        loop {
            match gate.reserve(&call(false)) {
                Err(ReserveError::WouldWait) => {}
                other => return other,
            }
            if tokio::time::Instant::now() + nap > deadline {
                break;
            }
            tokio::time::sleep(nap).await;
            nap = (nap * 2).min(Duration::from_millis(32));
        }
        gate.reserve(&call(true))
    }

    /// Reserves for the request (`choices` outputs of up to `max` tokens each), clamping its
    /// maximum if the key allows: halves it until the budget pays, down to the key's
    /// minimum. Returns the maximum per choice reserved for.
    async fn reserve(
        &self,
        h: Handles,
        p: &KeyPolicy,
        input: u64,
        max: u64,
        choices: u64,
    ) -> Result<(Reservation<'static>, u64), ReserveError> {
        match self
            .reserve_once(h, p, input, max.saturating_mul(choices))
            .await
        {
            Ok(r) => Ok((r, max)),
            Err(ReserveError::Denied(first)) if p.clamp && max > p.clamp_min_tokens => {
                let mut m = max;
                loop {
                    m = (m / 2).max(p.clamp_min_tokens);
                    match self
                        .reserve_once(h, p, input, m.saturating_mul(choices))
                        .await
                    {
                        Ok(r) => return Ok((r, m)),
                        Err(ReserveError::Denied(_)) if m > p.clamp_min_tokens => {}
                        Err(ReserveError::Denied(_)) => return Err(ReserveError::Denied(first)),
                        Err(e) => return Err(e),
                    }
                }
            }
            Err(e) => Err(e),
        }
    }

    /// The budget headers every response carries.
    fn budget_headers(&self, tenant: &str, headers: &mut HeaderMap) {
        let Some(w) = self.budgets.wallet(tenant) else {
            return;
        };
        let quota = w.remaining.saturating_add(w.consumed);
        let mut put = |name: &'static str, v: String| {
            if let Ok(v) = HeaderValue::from_str(&v) {
                headers.insert(name, v);
            }
        };
        put("ratelimit-policy", format!("\"wallet\";q={quota}"));
        put("ratelimit", format!("\"wallet\";r={}", w.remaining));
        put(REMAINING, Credits(w.remaining).to_string());
    }

    async fn handle(self: Arc<Self>, api: Api, headers: HeaderMap, body: Bytes) -> Response {
        let d = api.dialect();
        let Some(key) = caller_key(&headers) else {
            return fail(
                d,
                StatusCode::UNAUTHORIZED,
                "no API key: send the gateway key as the provider's API key",
            );
        };
        let Some(policy) = self.cfg.keys.get(key).cloned() else {
            return fail(
                d,
                StatusCode::UNAUTHORIZED,
                "unknown API key for this gateway",
            );
        };
        let mut req: Value = match serde_json::from_slice(&body) {
            Ok(v @ Value::Object(_)) => v,
            Ok(_) => return fail(d, StatusCode::BAD_REQUEST, "the body must be a JSON object"),
            Err(e) => {
                return fail(
                    d,
                    StatusCode::BAD_REQUEST,
                    &format!("invalid JSON body: {e}"),
                );
            }
        };
        let Some(mut model) = req.get("model").and_then(Value::as_str).map(str::to_owned) else {
            return fail(d, StatusCode::BAD_REQUEST, "model is required");
        };
        // Degrade before the wall: a lower tier's call while the tenant's balance is
        // projected to run out soon goes to a cheaper model, or is refused.
        let mut degraded = None;
        if let Some(rule) = &self.cfg.degrade
            && rule.tiers.contains(&policy.tier)
            && let Some(left) =
                self.budgets
                    .depletes_within(&policy.tenant, rule.horizon_secs, now_unix_ms())
        {
            match rule.route.get(&model) {
                Some(cheaper) => {
                    degraded = Some(format!("{model} -> {cheaper}"));
                    model = cheaper.clone();
                    req["model"] = Value::from(model.clone());
                }
                None => {
                    let msg = format!(
                        "tollgate: tenant {} is projected to run out of credits within {left} s at its recent burn; {} calls are refused until then",
                        policy.tenant, policy.tier
                    );
                    let mut r = fail(d, StatusCode::TOO_MANY_REQUESTS, &msg);
                    let secs = rule.poll_secs.max(1);
                    let h = r.headers_mut();
                    h.insert(header::RETRY_AFTER, HeaderValue::from(secs));
                    if let Ok(v) =
                        HeaderValue::from_str(&format!("\"projected-depletion\";r=0;t={secs}"))
                    {
                        h.insert("ratelimit", v);
                    }
                    h.insert(DEGRADED, HeaderValue::from_static("refused"));
                    return r;
                }
            }
        }
        let Some(upstream) = self.cfg.upstream(&model).cloned() else {
            return fail(
                d,
                StatusCode::NOT_FOUND,
                &format!("model {model:?} is not served by this gateway"),
            );
        };
        let stream =
            api != Api::Embeddings && req.get("stream").and_then(Value::as_bool).unwrap_or(false);
        let requested = api.max_tokens(&req);
        let max = requested.unwrap_or(self.cfg.default_max_output_tokens);
        // Chat's `n` asks for n choices, each up to the maximum: all are paid for.
        let choices = match (api, req.get("n")) {
            (Api::Chat, Some(n)) if !n.is_null() => match n.as_u64() {
                Some(n @ 1..=128) => n,
                _ => {
                    return fail(
                        d,
                        StatusCode::BAD_REQUEST,
                        "n must be an integer from 1 to 128",
                    );
                }
            },
            _ => 1,
        };
        let input = estimate::input_tokens(&req);
        let handles = match self.handles(&policy, &model) {
            Ok(h) => h,
            Err(e) => return self.reserve_failed(d, &policy, e),
        };
        let (hold, granted) = match self.reserve(handles, &policy, input, max, choices).await {
            Ok(x) => x,
            Err(e) => return self.reserve_failed(d, &policy, e),
        };
        let mut extra = HeaderMap::new();
        if let Some(route) = degraded
            && let Ok(v) = HeaderValue::from_str(&route)
        {
            extra.insert(DEGRADED, v);
        }
        if requested != Some(granted) {
            // Absent, the provider's own default could exceed what was reserved.
            api.set_max_tokens(&mut req, granted);
        }
        if granted != max {
            extra.insert(CLAMPED, HeaderValue::from(granted));
            extra.insert(REQUESTED, HeaderValue::from(max));
        }
        if let Ok(v) = HeaderValue::from_str(&hold.amount().to_string()) {
            extra.insert(RESERVED, v);
        }
        let mut caller_usage = false;
        if stream && api == Api::Chat {
            caller_usage = req
                .pointer("/stream_options/include_usage")
                .and_then(Value::as_bool)
                .unwrap_or(false);
            match req.get_mut("stream_options") {
                Some(Value::Object(o)) => {
                    o.insert("include_usage".into(), Value::Bool(true));
                }
                _ => {
                    req["stream_options"] = json!({"include_usage": true});
                }
            }
        }
        let call = Forward {
            gw: self.clone(),
            api,
            upstream,
            headers,
            body: Bytes::from(req.to_string()),
            input,
            max: granted.saturating_mul(choices),
            caller_usage,
            hold,
            tenant: policy.tenant.clone(),
            extra,
        };
        // The call runs in a task of its own: a client that goes away does not stop it
        // half-way, so the usage is committed whatever the client does.
        let (tx, rx) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            let _ = tx.send(call.run(stream).await);
        });
        match rx.await {
            Ok(r) => r,
            Err(_) => fail(
                d,
                StatusCode::INTERNAL_SERVER_ERROR,
                "the gateway's call task failed",
            ),
        }
    }

    fn reserve_failed(&self, d: Dialect, p: &KeyPolicy, e: ReserveError) -> Response {
        let mut resp = match &e {
            ReserveError::Denied(den) => {
                let secs = den.retry_after.as_millis().div_ceil(1000).max(1) as u64;
                let limit = match den.limit {
                    Some(l) => l.to_string(),
                    None => "lane allowance (refill pending)".to_owned(),
                };
                let horizon = den
                    .horizon
                    .map(|h| format!(" (per {h})"))
                    .unwrap_or_default();
                let msg = format!(
                    "tollgate: denied by the {limit}{horizon} of tenant {}: {} credits needed, tier {}; retry after {secs} s",
                    p.tenant, den.needed, den.tier
                );
                let mut r = fail(d, StatusCode::TOO_MANY_REQUESTS, &msg);
                let h = r.headers_mut();
                h.insert(header::RETRY_AFTER, HeaderValue::from(secs));
                let id = limit.replace(' ', "-");
                if let Ok(v) = HeaderValue::from_str(&format!("\"{id}\";r=0;t={secs}")) {
                    h.insert("ratelimit", v);
                }
                if let Ok(v) = HeaderValue::from_str(&format!("\"{id}\";q=0")) {
                    h.insert("ratelimit-policy", v);
                }
                r
            }
            ReserveError::TaskExhausted { .. } => {
                fail(d, StatusCode::TOO_MANY_REQUESTS, &format!("tollgate: {e}"))
            }
            ReserveError::Rating(_)
            | ReserveError::TooLarge(_)
            | ReserveError::InvalidName { .. } => {
                fail(d, StatusCode::BAD_REQUEST, &format!("tollgate: {e}"))
            }
            ReserveError::UnknownTenant(_) | ReserveError::NoClass { .. } => {
                fail(d, StatusCode::FORBIDDEN, &format!("tollgate: {e}"))
            }
            _ => {
                let mut r = fail(
                    d,
                    StatusCode::SERVICE_UNAVAILABLE,
                    &format!("tollgate: {e}"),
                );
                r.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(1u64));
                r
            }
        };
        let mut h = HeaderMap::new();
        self.budget_headers(&p.tenant, &mut h);
        for (k, v) in h {
            if let Some(k) = k
                && !resp.headers().contains_key(&k)
            {
                resp.headers_mut().insert(k, v);
            }
        }
        resp
    }
}

/// One call on its way upstream.
struct Forward {
    gw: Arc<Gateway>,
    api: Api,
    upstream: Upstream,
    headers: HeaderMap,
    body: Bytes,
    input: u64,
    max: u64,
    caller_usage: bool,
    hold: Reservation<'static>,
    tenant: String,
    extra: HeaderMap,
}

fn now_unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn commit(hold: Reservation<'static>, usage: Usage) {
    if let Err(e) = hold.commit(usage) {
        tracing::warn!(error = %e, "commit failed");
    }
}

impl Forward {
    async fn run(self, stream: bool) -> Response {
        let d = self.api.dialect();
        let url = format!("{}{}", self.upstream.base_url, self.api.path());
        let mut rb = self
            .gw
            .http
            .post(url)
            .header(header::CONTENT_TYPE, "application/json");
        for (name, value) in &self.headers {
            if forwardable(name) {
                rb = rb.header(name, value);
            }
        }
        if self.upstream.forward_caller_key {
            for name in [header::AUTHORIZATION, HeaderName::from_static("x-api-key")] {
                if let Some(v) = self.headers.get(&name) {
                    rb = rb.header(name, v);
                }
            }
        } else if let Some(k) = &self.upstream.api_key {
            rb = match d {
                Dialect::OpenAi => rb.bearer_auth(k),
                Dialect::Anthropic => rb.header("x-api-key", k),
            };
        }
        let estimate = Usage::new(self.input, self.max);
        let resp = match rb.body(self.body.clone()).send().await {
            Ok(r) => r,
            Err(e) => {
                // Refused before anything was sent: nothing to pay. Otherwise the provider
                // may have run the call: the conservative estimate.
                if e.is_connect() {
                    self.hold.cancel();
                } else {
                    commit(self.hold, estimate);
                }
                return finish_headers(
                    &self.gw,
                    &self.tenant,
                    self.extra.clone(),
                    fail(d, StatusCode::BAD_GATEWAY, &format!("upstream failed: {e}")),
                );
            }
        };
        let status = resp.status();
        let is_sse = resp
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("text/event-stream"));
        let mut head = HeaderMap::new();
        for (k, v) in resp.headers() {
            if copyable(k) {
                head.append(k.clone(), v.clone());
            }
        }
        if stream && status.is_success() && is_sse {
            return self.stream(status, head, resp);
        }
        let body = match read_all(resp).await {
            Ok(b) => b,
            Err(msg) => {
                commit(self.hold, estimate);
                return finish_headers(
                    &self.gw,
                    &self.tenant,
                    self.extra.clone(),
                    fail(d, StatusCode::BAD_GATEWAY, &msg),
                );
            }
        };
        if status.is_success() {
            let usage = serde_json::from_slice::<Value>(&body)
                .ok()
                .and_then(|v| self.api.usage(&v));
            commit(self.hold, usage.unwrap_or(estimate));
        } else {
            // The provider refused the call (its error status): providers do not bill these.
            self.hold.cancel();
        }
        let mut r = Response::new(Body::from(body));
        *r.status_mut() = status;
        *r.headers_mut() = head;
        finish_headers(&self.gw, &self.tenant, self.extra, r)
    }

    fn stream(self, status: StatusCode, head: HeaderMap, mut resp: reqwest::Response) -> Response {
        let (tx, rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(64);
        let Forward {
            gw,
            api,
            input,
            max,
            caller_usage,
            hold,
            tenant,
            extra,
            ..
        } = self;
        tokio::spawn(async move {
            let mut meter = Meter::new(api, max, caller_usage, input);
            let mut split = Splitter::default();
            'pump: loop {
                let chunk = tokio::select! {
                    _ = tx.closed() => break 'pump,
                    c = resp.chunk() => c,
                };
                let chunk = match chunk {
                    Ok(Some(c)) => c,
                    Ok(None) => break,
                    Err(e) => {
                        tracing::debug!(error = %e, "upstream stream failed");
                        break;
                    }
                };
                let events = match split.push(&chunk) {
                    Ok(ev) => ev,
                    Err(e) => {
                        tracing::warn!(error = %e, "upstream stream dropped");
                        break;
                    }
                };
                // The events of one upstream read go to the client in one write.
                let mut out = bytes::BytesMut::new();
                let mut cut = false;
                for ev in events {
                    match meter.on_event(&ev) {
                        Step::Forward => out.extend_from_slice(&ev.raw),
                        Step::Skip => {}
                        Step::Cut(tail) => {
                            for b in tail {
                                out.extend_from_slice(&b);
                            }
                            cut = true;
                            break;
                        }
                    }
                }
                if !out.is_empty() && tx.send(Ok(out.freeze())).await.is_err() {
                    break 'pump;
                }
                if cut {
                    break 'pump;
                }
            }
            // Dropping the upstream response closes its connection: a provider stops
            // generating (and billing) when its client goes away.
            drop(resp);
            commit(hold, meter.usage_to_commit());
        });
        let body = Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(rx));
        let mut r = Response::new(body);
        *r.status_mut() = status;
        *r.headers_mut() = head;
        finish_headers(&gw, &tenant, extra, r)
    }
}

/// The whole body, bounded.
async fn read_all(mut resp: reqwest::Response) -> Result<Bytes, String> {
    let mut buf = Vec::new();
    loop {
        match resp.chunk().await {
            Ok(Some(c)) => {
                if buf.len() + c.len() > MAX_RESPONSE_BYTES {
                    return Err(format!("upstream response over {MAX_RESPONSE_BYTES} bytes"));
                }
                buf.extend_from_slice(&c);
            }
            Ok(None) => return Ok(Bytes::from(buf)),
            Err(e) => return Err(format!("upstream response failed: {e}")),
        }
    }
}

fn finish_headers(gw: &Gateway, tenant: &str, extra: HeaderMap, mut r: Response) -> Response {
    let h = r.headers_mut();
    for (k, v) in extra {
        if let Some(k) = k {
            h.insert(k, v);
        }
    }
    gw.budget_headers(tenant, h);
    r
}

async fn chat(State(gw): State<Arc<Gateway>>, headers: HeaderMap, body: Bytes) -> Response {
    gw.handle(Api::Chat, headers, body).await
}

async fn messages(State(gw): State<Arc<Gateway>>, headers: HeaderMap, body: Bytes) -> Response {
    gw.handle(Api::Messages, headers, body).await
}

async fn responses(State(gw): State<Arc<Gateway>>, headers: HeaderMap, body: Bytes) -> Response {
    gw.handle(Api::Responses, headers, body).await
}

async fn embeddings(State(gw): State<Arc<Gateway>>, headers: HeaderMap, body: Bytes) -> Response {
    gw.handle(Api::Embeddings, headers, body).await
}

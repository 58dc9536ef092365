//! The sidecar's HTTP endpoints: `/healthz` (liveness), `/readyz` (readiness), `/metrics`.
//!
//! - `/healthz` is 200 while the control loop keeps ticking (a wedged loop turns it 503, so
//!   the kubelet restarts the sidecar; agents keep the region meanwhile).
//! - `/readyz` is 200 once the region exists and agents can be served: the session is up, or
//!   the sidecar still holds leased budget (degraded mode), and every tenant's latest pushed
//!   policy is applied. Otherwise it is 503 and says why.
//! - `/metrics` is the Prometheus text format ([`crate::metrics`]).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::registry::Registry;

/// Liveness and readiness, written by the control loop, read by the endpoints.
#[derive(Debug)]
pub struct Health {
    start: Instant,
    last_tick_ms: AtomicU64,
    region_ready: AtomicBool,
    connected: AtomicBool,
    has_budget: AtomicBool,
    /// Why the sidecar is not ready besides the above (a policy it could not apply), by
    /// what it concerns.
    problems: Mutex<BTreeMap<String, String>>,
    /// A loop silent for longer than this is reported dead.
    pub stall_after: Duration,
}

impl Default for Health {
    fn default() -> Self {
        Self {
            start: Instant::now(),
            last_tick_ms: AtomicU64::new(0),
            region_ready: AtomicBool::new(false),
            connected: AtomicBool::new(false),
            has_budget: AtomicBool::new(false),
            problems: Mutex::new(BTreeMap::new()),
            stall_after: Duration::from_secs(10),
        }
    }
}

impl Health {
    /// Called by the control loop on every tick.
    pub fn tick(&self) {
        let ms = self.start.elapsed().as_millis() as u64;
        self.last_tick_ms.store(ms, Ordering::Relaxed);
    }
    /// The region exists and is initialised.
    pub fn set_region_ready(&self, v: bool) {
        self.region_ready.store(v, Ordering::Relaxed);
    }
    /// The session is up.
    pub fn set_connected(&self, v: bool) {
        self.connected.store(v, Ordering::Relaxed);
    }
    /// The sidecar holds some leased budget.
    pub fn set_has_budget(&self, v: bool) {
        self.has_budget.store(v, Ordering::Relaxed);
    }
    /// Records (or, with `None`, clears) that tenant `tenant`'s latest policy is not applied.
    pub fn set_policy_error(&self, tenant: &str, error: Option<String>) {
        self.set_problem(format!("policy of tenant {tenant}"), error);
    }
    /// Records (or clears) a reason not to be ready, under `what`.
    pub fn set_problem(&self, what: String, reason: Option<String>) {
        let mut p = self.problems.lock().unwrap_or_else(|e| e.into_inner());
        match reason {
            Some(r) => p.insert(what, r),
            None => p.remove(&what),
        };
    }
    /// Why the sidecar is not ready (empty when it is).
    pub fn not_ready_reasons(&self) -> Vec<String> {
        let mut out = Vec::new();
        if !self.region_ready.load(Ordering::Relaxed) {
            out.push("the region is not created".to_string());
        } else if !self.connected.load(Ordering::Relaxed)
            && !self.has_budget.load(Ordering::Relaxed)
        {
            out.push("no authority session and no leased budget".to_string());
        }
        let p = self.problems.lock().unwrap_or_else(|e| e.into_inner());
        out.extend(p.iter().map(|(what, why)| format!("{what}: {why}")));
        out
    }
    /// Whether the control loop is alive.
    pub fn live(&self) -> bool {
        let now = self.start.elapsed().as_millis() as u64;
        now.saturating_sub(self.last_tick_ms.load(Ordering::Relaxed))
            <= self.stall_after.as_millis() as u64
    }
    /// Whether agents can be served.
    pub fn ready(&self) -> bool {
        self.not_ready_reasons().is_empty()
    }
}

#[derive(Clone)]
struct AppState {
    health: Arc<Health>,
    registry: Arc<Registry>,
}

/// The router (exposed for tests).
pub fn router(health: Arc<Health>, registry: Arc<Registry>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(AppState { health, registry })
}

async fn healthz(State(s): State<AppState>) -> impl IntoResponse {
    if s.health.live() {
        (StatusCode::OK, "ok\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "control loop stalled\n")
    }
}

async fn readyz(State(s): State<AppState>) -> impl IntoResponse {
    let reasons = s.health.not_ready_reasons();
    if reasons.is_empty() {
        (StatusCode::OK, "ready\n".to_string())
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {}\n", reasons.join("; ")),
        )
    }
}

async fn metrics(State(s): State<AppState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        crate::metrics::render(&s.registry),
    )
}

/// Binds `addr` and returns the bound address and the serving future (which ends when
/// `shutdown` resolves).
pub async fn bind(
    addr: SocketAddr,
    health: Arc<Health>,
    registry: Arc<Registry>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<(
    SocketAddr,
    impl std::future::Future<Output = std::io::Result<()>>,
)> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    let app = router(health, registry);
    let fut = async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(shutdown)
            .await
    };
    Ok((local, fut))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readiness_needs_region_and_session_or_budget() {
        let h = Health::default();
        h.tick();
        assert!(h.live());
        assert!(!h.ready());
        h.set_region_ready(true);
        assert!(!h.ready());
        h.set_has_budget(true);
        assert!(h.ready());
        h.set_has_budget(false);
        h.set_connected(true);
        assert!(h.ready());
        h.set_policy_error("acme", Some("no free pool".into()));
        assert!(!h.ready());
        assert_eq!(
            h.not_ready_reasons(),
            vec!["policy of tenant acme: no free pool".to_string()]
        );
        h.set_policy_error("acme", None);
        assert!(h.ready());
    }

    #[test]
    fn stalled_loop_is_not_live() {
        let h = Health {
            stall_after: Duration::ZERO,
            ..Health::default()
        };
        h.tick();
        std::thread::sleep(Duration::from_millis(5));
        assert!(!h.live());
    }
}

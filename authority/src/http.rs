//! The authority's plain HTTP endpoint (default `:7071`): `/healthz`, Prometheus
//! `/metrics`, and with the shared state the HTTP/JSON admin API (`POST /v1/admin/<Method>`)
//! and its OpenAPI document (`/openapi.json`, see [`crate::http_api`]), and the finance
//! dashboard (`/ui`, see [`crate::ui`]).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;

use crate::metrics::Metrics;
use crate::state::State as Shared;

async fn metrics(State(m): State<Arc<Metrics>>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        m.encode(),
    )
}

/// The router (exposed for tests); with `state`, the admin API too.
pub fn router(metrics_state: Arc<Metrics>, state: Option<Arc<Shared>>) -> Router {
    let base = Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/metrics", get(metrics))
        .with_state(metrics_state);
    match state {
        Some(s) => base
            .merge(crate::http_api::Api::new(s).router())
            .merge(crate::ui::router()),
        None => base,
    }
}

/// Binds `addr` and serves until `shutdown` resolves. Returns the bound address.
pub async fn serve(
    addr: SocketAddr,
    metrics_state: Arc<Metrics>,
    state: Option<Arc<Shared>>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    let app = router(metrics_state, state);
    let task = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app)
            .with_graceful_shutdown(shutdown)
            .await
        {
            tracing::warn!(error = %e, "http server stopped");
        }
    });
    Ok((local, task))
}

//! The sidecar process: one current-thread tokio runtime (a small, mostly idle process), the
//! HTTP endpoints, the authority session and the control loop, and a graceful shutdown on
//! SIGTERM / SIGINT.
//!
//! [`spawn`] runs a sidecar on its own thread (the demo and in-process tests run two of
//! them); [`run_blocking`] is `tollgate sidecar`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use prometheus_client::registry::Registry;
use tokio::sync::{mpsc, watch};

use crate::config::Config;
use crate::core::Core;
use crate::http::Health;
use crate::metrics::Metrics;
use crate::session;

/// The control loop's period when no agent has been active for a second.
pub const IDLE_TICK: Duration = Duration::from_millis(25);

/// The shortest gap between two ticks when grants bring a tick forward.
const MIN_TICK_GAP: Duration = Duration::from_millis(1);

/// How long a graceful shutdown waits for the last batches to be acknowledged.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// A sidecar running on its own thread.
#[derive(Debug)]
pub struct Running {
    /// Where /healthz, /readyz and /metrics are served.
    pub http_addr: SocketAddr,
    /// Shared metrics (read them directly in tests and the demo).
    pub metrics: Arc<Metrics>,
    /// Health flags.
    pub health: Arc<Health>,
    stop: watch::Sender<bool>,
    thread: Option<std::thread::JoinHandle<anyhow::Result<()>>>,
}

impl Running {
    /// Graceful stop (as SIGTERM): returns leases, flushes batches, then joins the thread.
    pub fn stop(mut self) -> anyhow::Result<()> {
        let _ = self.stop.send(true);
        match self.thread.take() {
            Some(t) => t
                .join()
                .map_err(|_| anyhow::anyhow!("the sidecar thread panicked"))?,
            None => Ok(()),
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Starts a sidecar on a new thread and waits until its HTTP endpoint is bound and its
/// region exists.
pub fn spawn(config: Config) -> anyhow::Result<Running> {
    let (stop, stop_rx) = watch::channel(false);
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let metrics = Arc::new(Metrics::default());
    let health = Arc::new(Health::default());
    let (m2, h2) = (metrics.clone(), health.clone());
    let thread = std::thread::Builder::new()
        .name(format!("sidecar-{}", config.sidecar_id))
        .spawn(move || -> anyhow::Result<()> {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("building the sidecar runtime")?;
            rt.block_on(serve(config, m2, h2, stop_rx, Some(ready_tx)))
        })
        .context("starting the sidecar thread")?;
    match ready_rx.recv() {
        Ok(Ok(http_addr)) => Ok(Running {
            http_addr,
            metrics,
            health,
            stop,
            thread: Some(thread),
        }),
        Ok(Err(e)) => {
            let _ = thread.join();
            Err(anyhow::anyhow!(e))
        }
        Err(_) => match thread.join() {
            Ok(Err(e)) => Err(e),
            _ => Err(anyhow::anyhow!("the sidecar stopped before it was ready")),
        },
    }
}

/// `tollgate sidecar`: runs until SIGTERM or SIGINT.
pub fn run_blocking(config: Config) -> anyhow::Result<()> {
    // Any process that maps the region could truncate it; without the guard the sidecar
    // would die of SIGBUS on its next access, with unsent usage in hand.
    tollgate_client::install_truncation_guard().context("installing the SIGBUS guard")?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("building the sidecar runtime")?;
    rt.block_on(async move {
        let (stop, stop_rx) = watch::channel(false);
        tokio::spawn(async move {
            wait_for_signal().await;
            let _ = stop.send(true);
        });
        serve(
            config,
            Arc::new(Metrics::default()),
            Arc::new(Health::default()),
            stop_rx,
            None,
        )
        .await
    })
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
                _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT: shutting down"),
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for SIGTERM; only SIGINT stops the sidecar");
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

async fn serve(
    config: Config,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    mut stop: watch::Receiver<bool>,
    ready: Option<std::sync::mpsc::Sender<Result<SocketAddr, String>>>,
) -> anyhow::Result<()> {
    let report = |r: Result<SocketAddr, String>| {
        if let Some(tx) = &ready {
            let _ = tx.send(r);
        }
    };
    let mut registry = Registry::default();
    metrics.register(&mut registry);
    let registry = Arc::new(registry);

    let mut core = match Core::start(config.clone(), metrics.clone(), health.clone()) {
        Ok(c) => c,
        Err(e) => {
            report(Err(format!("{e:#}")));
            return Err(e);
        }
    };
    health.set_region_ready(true);
    health.tick();

    let (http_stop_tx, mut http_stop_rx) = watch::channel(false);
    let http_shutdown = async move {
        let _ = http_stop_rx.changed().await;
    };
    let (http_addr, http) =
        match crate::http::bind(config.http, health.clone(), registry, http_shutdown).await {
            Ok(x) => x,
            Err(e) => {
                let msg = format!("binding the HTTP endpoint {}: {e}", config.http);
                report(Err(msg.clone()));
                anyhow::bail!(msg);
            }
        };
    let http_task = tokio::spawn(http);
    tracing::info!(
        sidecar = %config.sidecar_id,
        region = %config.region.display(),
        http = %http_addr,
        authority = %config.authority,
        "sidecar started"
    );
    report(Ok(http_addr));

    let (events_tx, mut events) = mpsc::channel(1024);
    let (session_stop_tx, session_stop_rx) = watch::channel(false);
    let target = session::Target {
        url: config.authority.clone(),
        sidecar_id: config.sidecar_id.clone(),
        token: config.token.clone(),
        ca_cert: config.ca_cert.clone(),
        connect_timeout: Duration::from_secs(3),
    };
    let session_task = tokio::spawn(session::run(target, events_tx, session_stop_rx));

    // The loop ticks every `tick` while agents are active and slows to IDLE_TICK after a
    // second without activity (near-zero CPU when idle; agents wait up to AGENT_MAX_WAIT for
    // a top-up, longer than an idle tick).
    let mut next_tick = tokio::time::Instant::now();
    let mut last_tick = next_tick;
    // A sidecar whose first registration is refused for good (its token is unknown, or does
    // not cover its tenants) can never work: it stops with the authority's message instead
    // of looking alive. Refused later, it stays up on its leases and says so (see `Core`).
    let mut registered = false;
    let mut refused: Option<String> = None;
    loop {
        tokio::select! {
            _ = stop.changed() => break,
            ev = events.recv() => match ev {
                Some(session::Event::Refused { code, message }) if !registered => {
                    refused = Some(format!(
                        "the authority at {} refused to register sidecar {} for tenants {} ({code:?}): {message}",
                        config.authority,
                        config.sidecar_id,
                        config.tenants.join(","),
                    ));
                    core.on_event(session::Event::Refused { code, message });
                    break;
                }
                Some(ev) => {
                    registered |= matches!(ev, session::Event::Connected { .. });
                    core.on_event(ev);
                    // An agent may be waiting (bounded) for what just arrived: tick now,
                    // but never more often than MIN_TICK_GAP under a burst of grants.
                    if core.take_serve_now() {
                        next_tick = next_tick.min(last_tick + MIN_TICK_GAP);
                    }
                }
                None => break,
            },
            _ = tokio::time::sleep_until(next_tick) => {
                core.tick();
                last_tick = tokio::time::Instant::now();
                let period = if core.idle_for() > Duration::from_secs(1) { IDLE_TICK.max(config.tick) } else { config.tick };
                next_tick = tokio::time::Instant::now() + period;
            }
        }
    }

    // Graceful shutdown: stop serving new allowances, flush usage, return leases.
    tracing::info!("draining: revoking lane allowances and flushing usage");
    core.begin_shutdown();
    let deadline = tokio::time::Instant::now() + SHUTDOWN_GRACE;
    loop {
        core.tick();
        if core.flushed() {
            break;
        }
        tokio::select! {
            _ = tokio::time::sleep_until(deadline) => {
                tracing::warn!("shutdown grace over with unacknowledged batches; they stay in the outbox for the next start");
                break;
            }
            ev = events.recv() => if let Some(ev) = ev { core.on_event(ev) },
            _ = tokio::time::sleep(Duration::from_millis(20)) => {}
        }
    }
    core.return_leases();
    // Keep the session a moment: the returns go out, and a grant still on its way is
    // returned at once (on_grant returns leases while shutting down).
    let flush_until = tokio::time::Instant::now() + Duration::from_millis(300);
    loop {
        core.flush_up();
        tokio::select! {
            _ = tokio::time::sleep_until(flush_until) => break,
            ev = events.recv() => if let Some(ev) = ev { core.on_event(ev) },
            _ = tokio::time::sleep(Duration::from_millis(10)) => {}
        }
    }
    let _ = session_stop_tx.send(true);
    let _ = session_task.await;
    let _ = http_stop_tx.send(true);
    let _ = http_task.await;
    core.finish();
    if let Some(why) = refused {
        tracing::error!("sidecar stopped: {why}");
        anyhow::bail!(why);
    }
    tracing::info!("sidecar stopped");
    Ok(())
}

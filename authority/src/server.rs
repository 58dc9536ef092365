//! Wiring: opens the stores, builds the shared [`State`] ([`crate::state`]), spawns the
//! background tasks ([`crate::tasks`]) and runs the gRPC services and the HTTP endpoint
//! until shutdown ([`start`]). It only starts things: nothing else in the crate imports it.

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use tollgate_ledger::store::postgres::{PostgresStore, redact_url};
use tollgate_ledger::{AuditSigner, Clock, Ledger, SqliteStore, Store, SystemClock};
use tollgate_proto::v1::admin_service_server::AdminServiceServer;
use tollgate_proto::v1::sidecar_service_server::SidecarServiceServer;
use tonic::service::interceptor::InterceptedService;

use crate::auth::{Authenticator, Gate, GateKind};
use crate::config::Config;
use crate::ingest::Ingest;
use crate::lease::LeaseTable;
use crate::metrics::Metrics;
use crate::policy_store::PolicyStore;
use crate::sessions::Sessions;
use crate::webhook::WebhookSender;

// Their old home: callers outside the crate name them here.
pub use crate::leasing::{settle_due_leases, settle_hold};
pub use crate::state::{State, ledger_status, now_ms};

/// Largest message the sidecar service decodes. A full batch (16,384 records with their
/// dictionary) is well under 4 MiB; a Register is bounded by its own limits
/// ([`crate::sidecar_svc::MAX_REGISTER_TENANTS`], [`crate::sidecar_svc::MAX_HELD_LEASES`]).
pub const SIDECAR_MAX_MESSAGE_BYTES: usize = 8 * 1024 * 1024;
/// Largest request the admin service decodes (a price book of thousands of models fits).
pub const ADMIN_MAX_MESSAGE_BYTES: usize = 4 * 1024 * 1024;

/// How to run the authority.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// Store URL (`sqlite://path`).
    pub store: String,
    /// gRPC listen address.
    pub listen: SocketAddr,
    /// HTTP (health, metrics, the HTTP/JSON admin API) listen address; None = no HTTP endpoint.
    pub http: Option<SocketAddr>,
    /// Configuration.
    pub config: Config,
    /// The audit signer.
    pub signer_seed_hex: String,
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServeError {
    /// The store could not be opened.
    #[error("cannot open the store {url}: {source}")]
    Store {
        /// URL (password redacted).
        url: String,
        /// Cause.
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A listener could not bind.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// Address.
        addr: SocketAddr,
        /// Cause.
        source: std::io::Error,
    },
    /// TLS files could not be read or used.
    #[error("TLS: {0}")]
    Tls(String),
    /// The signing key is invalid.
    #[error("signing key: {0}")]
    Key(String),
    /// The gRPC server failed.
    #[error("gRPC server: {0}")]
    Transport(String),
}

/// A running authority.
#[derive(Debug)]
pub struct Running {
    /// Bound gRPC address.
    pub grpc_addr: SocketAddr,
    /// Bound HTTP address.
    pub http_addr: Option<SocketAddr>,
    /// Shared state (tests read it).
    pub state: Arc<State>,
    shutdown: watch::Sender<bool>,
    task: tokio::task::JoinHandle<Result<(), ServeError>>,
}

impl Running {
    /// Stops the servers and waits for them.
    pub async fn shutdown(self) -> Result<(), ServeError> {
        let _ = self.shutdown.send(true);
        match self.task.await {
            Ok(r) => r,
            Err(e) => Err(ServeError::Transport(e.to_string())),
        }
    }

    /// Waits until the server stops (on its own or by [`Running::shutdown`]).
    pub async fn wait(self) -> Result<(), ServeError> {
        match self.task.await {
            Ok(r) => r,
            Err(e) => Err(ServeError::Transport(e.to_string())),
        }
    }

    /// A handle that triggers shutdown.
    pub fn shutdown_handle(&self) -> watch::Sender<bool> {
        self.shutdown.clone()
    }
}

/// Opens the ledger's store and the authority's tables by URL: `postgres://…` (with
/// optional `schema=` and `pool_size=` parameters; pending migrations applied when
/// `migrate`) or SQLite (`sqlite://PATH`, the default). Both share one database.
pub async fn open_stores(
    url: &str,
    migrate: bool,
) -> Result<(Arc<dyn Store>, PolicyStore), ServeError> {
    let err = |e: Box<dyn std::error::Error + Send + Sync>| ServeError::Store {
        url: redact_url(url),
        source: e,
    };
    if PostgresStore::is_url(url) {
        let (clean, mut opts) = PostgresStore::options_from_url(url).map_err(|e| err(e.into()))?;
        opts.migrate = migrate;
        let pg = PostgresStore::connect_with(&clean, opts)
            .await
            .map_err(|e| err(e.into()))?;
        let policy = PolicyStore::postgres(pg.pool().clone());
        return Ok((Arc::new(pg), policy));
    }
    let store = SqliteStore::open_url(url)
        .await
        .map_err(|e| err(e.into()))?;
    let policy = PolicyStore::open_sqlite(url)
        .await
        .map_err(|e| err(e.into()))?;
    Ok((Arc::new(store), policy))
}

/// `tollgate authority migrate`: applies pending migrations and returns the versions
/// applied (PostgreSQL; SQLite files are created and brought up to date on open, so it
/// returns none for them).
pub async fn migrate_store(url: &str) -> Result<Vec<i64>, ServeError> {
    if PostgresStore::is_url(url) {
        let err = |e: Box<dyn std::error::Error + Send + Sync>| ServeError::Store {
            url: redact_url(url),
            source: e,
        };
        let (clean, mut opts) = PostgresStore::options_from_url(url).map_err(|e| err(e.into()))?;
        opts.migrate = false;
        opts.max_connections = 1;
        let pg = PostgresStore::connect_with(&clean, opts)
            .await
            .map_err(|e| err(e.into()))?;
        let applied = pg.migrate().await.map_err(|e| err(e.into()));
        pg.close().await;
        return applied;
    }
    open_stores(url, true).await?;
    Ok(Vec::new())
}

/// Starts the authority: opens the store, binds the listeners, spawns the loops.
pub async fn start(opts: ServeOptions) -> Result<Running, ServeError> {
    start_with_clock(opts, Arc::new(SystemClock)).await
}

/// [`start`] with the ledger reading time from `clock` (tests move it across billing
/// periods: monthly resets, annual pools; leases and sessions keep the system clock).
pub async fn start_with_clock(
    opts: ServeOptions,
    clock: Arc<dyn Clock>,
) -> Result<Running, ServeError> {
    let (state, shutdown_tx) =
        open_state(&opts.store, &opts.config, &opts.signer_seed_hex, clock).await?;
    let shutdown_rx = state.shutdown.clone();
    let metrics = state.metrics.clone();

    let listener = tokio::net::TcpListener::bind(opts.listen)
        .await
        .map_err(|source| ServeError::Bind {
            addr: opts.listen,
            source,
        })?;
    let grpc_addr = listener.local_addr().map_err(|source| ServeError::Bind {
        addr: opts.listen,
        source,
    })?;
    let http_addr = match opts.http {
        Some(addr) => {
            let mut rx = shutdown_rx.clone();
            let (a, _task) =
                crate::http::serve(addr, metrics.clone(), Some(state.clone()), async move {
                    let _ = rx.wait_for(|v| *v).await;
                })
                .await
                .map_err(|source| ServeError::Bind { addr, source })?;
            Some(a)
        }
        None => None,
    };

    crate::tasks::spawn_loops(state.clone(), shutdown_rx.clone());

    let mut builder = tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(Duration::from_secs(20)))
        .tcp_nodelay(true);
    if let Some(tls) = &opts.config.tls {
        let cert = std::fs::read(&tls.cert)
            .map_err(|e| ServeError::Tls(format!("cannot read {}: {e}", tls.cert.display())))?;
        let key = std::fs::read(&tls.key)
            .map_err(|e| ServeError::Tls(format!("cannot read {}: {e}", tls.key.display())))?;
        let identity = tonic::transport::Identity::from_pem(cert, key);
        builder = builder
            .tls_config(tonic::transport::ServerTlsConfig::new().identity(identity))
            .map_err(|e| ServeError::Tls(e.to_string()))?;
    }
    let sidecar = SidecarServiceServer::new(crate::sidecar_svc::SidecarSvc::new(state.clone()))
        .max_decoding_message_size(SIDECAR_MAX_MESSAGE_BYTES);
    let admin = AdminServiceServer::new(crate::admin_svc::AdminSvc::new(state.clone()))
        .max_decoding_message_size(ADMIN_MAX_MESSAGE_BYTES);
    let router = builder
        .add_service(InterceptedService::new(
            sidecar,
            Gate::new(state.auth.clone(), GateKind::Sidecar),
        ))
        .add_service(InterceptedService::new(
            admin,
            Gate::new(state.auth.clone(), GateKind::Admin),
        ));
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
    let mut rx = shutdown_rx;
    let task = tokio::spawn(async move {
        router
            .serve_with_incoming_shutdown(incoming, async move {
                let _ = rx.wait_for(|v| *v).await;
            })
            .await
            .map_err(|e| ServeError::Transport(e.to_string()))
    });
    tracing::info!(%grpc_addr, ?http_addr, "authority listening");
    Ok(Running {
        grpc_addr,
        http_addr,
        state,
        shutdown: shutdown_tx,
        task,
    })
}

/// The authority's shared [`State`] over the store at `store` (migrated), without any
/// listener or background loop: what [`start_with_clock`] serves, and what the
/// deterministic simulation (`sim/`) drives message by message. Needs a tokio runtime (the
/// ingest committer is spawned). The sender turns the state's shutdown flag on.
pub async fn open_state(
    store: &str,
    config: &Config,
    signer_seed_hex: &str,
    clock: Arc<dyn Clock>,
) -> Result<(Arc<State>, watch::Sender<bool>), ServeError> {
    let signer = AuditSigner::from_seed_hex(signer_seed_hex.trim())
        .map_err(|e| ServeError::Key(e.to_string()))?;
    let (store, policy) = open_stores(store, true).await?;
    let ledger = Arc::new(
        Ledger::new(store, clock, signer)
            .with_batch_retention(config.batch_retention_secs())
            .with_overrun_allowance(config.leases.overrun_allowance()),
    );
    let metrics = Arc::new(Metrics::new());
    let webhook = WebhookSender::new(
        config.webhook_secret.as_deref().map(str::as_bytes),
        config.webhook_allow_private_targets,
        metrics.clone(),
    )
    .map_err(|e| ServeError::Transport(e.to_string()))?;
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let state = Arc::new(State {
        ingest: Ingest::start(ledger.clone(), metrics.clone()),
        ledger,
        policy,
        auth: Authenticator::from_config(config),
        metrics: metrics.clone(),
        sessions: Sessions::default(),
        // Lease ids are recorded in the store: start their serials past any an earlier
        // run of this process could have used.
        leases: Mutex::new(LeaseTable::starting_at(now_ms().saturating_mul(1000))),
        grant_locks: Default::default(),
        lease_cfg: config.leases.clone(),
        started_ms: now_ms(),
        webhook,
        alert_dirty: Mutex::new(BTreeSet::new()),
        policy_cache: Mutex::new(HashMap::new()),
        shutdown: shutdown_rx.clone(),
    });

    Ok((state, shutdown_tx))
}

/// Reads a file into a string, naming it in the error.
pub fn read_file(path: &PathBuf) -> Result<String, std::io::Error> {
    std::fs::read_to_string(path)
}

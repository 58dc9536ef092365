//! Wiring: the shared [`State`], the background loops (lease settlement, ledger sweep,
//! alert evaluation and delivery) and [`serve`], which runs the gRPC services and the HTTP
//! endpoint until shutdown.

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use tollgate_ledger::store::postgres::{PostgresStore, redact_url};
use tollgate_ledger::{
    AuditSigner, Ledger, LedgerError, SqliteStore, Store, SystemClock, TenantId,
};
use tollgate_proto::v1::TenantPolicy;
use tollgate_proto::v1::admin_service_server::AdminServiceServer;
use tollgate_proto::v1::sidecar_service_server::SidecarServiceServer;
use tonic::Status;
use tonic::service::interceptor::InterceptedService;

use crate::auth::{Authenticator, Gate, GateKind};
use crate::config::{Config, LeaseConfig};
use crate::ingest::Ingest;
use crate::lease::{Backing, LeaseTable};
use crate::metrics::Metrics;
use crate::policy_store::{PendingWebhook, PolicyStore};
use crate::sessions::Sessions;
use crate::webhook::WebhookSender;

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Largest message the sidecar service decodes. A full batch (16,384 records with their
/// dictionary) is well under 4 MiB; a Register is bounded by its own limits
/// ([`crate::sidecar_svc::MAX_REGISTER_TENANTS`], [`crate::sidecar_svc::MAX_HELD_LEASES`]).
pub const SIDECAR_MAX_MESSAGE_BYTES: usize = 8 * 1024 * 1024;
/// Largest request the admin service decodes (a price book of thousands of models fits).
pub const ADMIN_MAX_MESSAGE_BYTES: usize = 4 * 1024 * 1024;

/// Maps a ledger error to a gRPC status that says what to do.
pub fn ledger_status(e: LedgerError) -> Status {
    match e {
        LedgerError::InvalidInput(m) => Status::invalid_argument(m),
        LedgerError::Overflow(m) => Status::invalid_argument(format!("amount overflow: {m}")),
        e @ (LedgerError::UnknownTenant(_)
        | LedgerError::UnknownGrant { .. }
        | LedgerError::UnknownHold { .. }) => Status::not_found(e.to_string()),
        e @ (LedgerError::TenantExists(_)
        | LedgerError::BatchConflict { .. }
        | LedgerError::GrantReferenceConflict { .. }) => Status::already_exists(e.to_string()),
        e @ (LedgerError::HoldClosed { .. } | LedgerError::InsufficientFunds { .. }) => {
            Status::failed_precondition(e.to_string())
        }
        e @ (LedgerError::Store(_) | LedgerError::Io(_)) => Status::unavailable(e.to_string()),
        e @ LedgerError::Corrupt(_) => Status::data_loss(e.to_string()),
        e => Status::internal(e.to_string()),
    }
}

/// Everything the services share.
#[derive(Debug)]
pub struct State {
    /// The ledger (money rules and store).
    pub ledger: Arc<Ledger>,
    /// Quotas, floors, webhook URLs, hints.
    pub policy: PolicyStore,
    /// Credentials.
    pub auth: Authenticator,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Sessions and registrations.
    pub sessions: Sessions,
    /// Outstanding leases and demand.
    pub leases: Mutex<LeaseTable>,
    /// Serializes lease decisions (fair share needs a consistent view).
    pub grant_lock: tokio::sync::Mutex<()>,
    /// Lease timing.
    pub lease_cfg: LeaseConfig,
    /// When this process started (unix ms): the relearn window runs from here.
    pub started_ms: u64,
    /// Group-commit ingest.
    pub ingest: Ingest,
    /// Alert webhook delivery.
    pub webhook: WebhookSender,
    /// Tenants with usage since the last alert evaluation.
    pub alert_dirty: Mutex<BTreeSet<String>>,
    /// Stored policies (quotas, floors) by tenant, read through.
    pub policy_cache: Mutex<HashMap<String, TenantPolicy>>,
    /// Becomes true when the server shuts down (sessions end themselves).
    pub shutdown: watch::Receiver<bool>,
}

impl State {
    /// True while the authority relearns leases after its start.
    pub fn relearning(&self, now_ms: u64) -> bool {
        now_ms < self.relearn_until_ms()
    }

    /// End of the relearn window.
    pub fn relearn_until_ms(&self) -> u64 {
        self.started_ms
            .saturating_add(self.lease_cfg.relearn_grace_secs.saturating_mul(1000))
    }

    /// A cached stored policy.
    pub fn policy_cache_get(&self, tenant: &str) -> Option<TenantPolicy> {
        self.policy_cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(tenant)
            .cloned()
    }

    /// Caches a stored policy.
    pub fn policy_cache_put(&self, p: TenantPolicy) {
        self.policy_cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(p.tenant.clone(), p);
    }

    /// Locks the lease table (poisoning is recovered: every update is a single step).
    pub fn lease_table(&self) -> std::sync::MutexGuard<'_, LeaseTable> {
        self.leases
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// How to run the authority.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// Store URL (`sqlite://path`).
    pub store: String,
    /// gRPC listen address.
    pub listen: SocketAddr,
    /// HTTP (health, metrics) listen address; None = no HTTP endpoint.
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
    #[error("cannot open the store {url}: {message}")]
    Store {
        /// URL.
        url: String,
        /// Cause.
        message: String,
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
    let err = |message: String| ServeError::Store {
        url: redact_url(url),
        message,
    };
    if PostgresStore::is_url(url) {
        let (clean, mut opts) =
            PostgresStore::options_from_url(url).map_err(|e| err(e.to_string()))?;
        opts.migrate = migrate;
        let pg = PostgresStore::connect_with(&clean, opts)
            .await
            .map_err(|e| err(e.to_string()))?;
        let policy = PolicyStore::postgres(pg.pool().clone());
        return Ok((Arc::new(pg), policy));
    }
    let store = SqliteStore::open_url(url)
        .await
        .map_err(|e| err(e.to_string()))?;
    let policy = PolicyStore::open_sqlite(url)
        .await
        .map_err(|e| err(e.to_string()))?;
    Ok((Arc::new(store), policy))
}

/// `tollgate authority migrate`: applies pending migrations and returns the versions
/// applied (PostgreSQL; SQLite files are created and brought up to date on open, so it
/// returns none for them).
pub async fn migrate_store(url: &str) -> Result<Vec<i64>, ServeError> {
    if PostgresStore::is_url(url) {
        let err = |message: String| ServeError::Store {
            url: redact_url(url),
            message,
        };
        let (clean, mut opts) =
            PostgresStore::options_from_url(url).map_err(|e| err(e.to_string()))?;
        opts.migrate = false;
        opts.max_connections = 1;
        let pg = PostgresStore::connect_with(&clean, opts)
            .await
            .map_err(|e| err(e.to_string()))?;
        let applied = pg.migrate().await.map_err(|e| err(e.to_string()));
        pg.close().await;
        return applied;
    }
    open_stores(url, true).await?;
    Ok(Vec::new())
}

/// Starts the authority: opens the store, binds the listeners, spawns the loops.
pub async fn start(opts: ServeOptions) -> Result<Running, ServeError> {
    let signer = AuditSigner::from_seed_hex(opts.signer_seed_hex.trim())
        .map_err(|e| ServeError::Key(e.to_string()))?;
    let (store, policy) = open_stores(&opts.store, true).await?;
    let ledger = Arc::new(
        Ledger::new(store, Arc::new(SystemClock), signer)
            .with_batch_retention(opts.config.batch_retention_secs())
            .with_overrun_allowance(opts.config.leases.overrun_allowance()),
    );
    let metrics = Arc::new(Metrics::new());
    let webhook = WebhookSender::new(
        opts.config.webhook_secret.as_deref().map(str::as_bytes),
        opts.config.webhook_allow_private_targets,
        metrics.clone(),
    )
    .map_err(|e| ServeError::Transport(e.to_string()))?;
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let state = Arc::new(State {
        ingest: Ingest::start(ledger.clone(), metrics.clone()),
        ledger,
        policy,
        auth: Authenticator::from_config(&opts.config),
        metrics: metrics.clone(),
        sessions: Sessions::default(),
        // Lease ids are recorded in the store: start their serials past any an earlier
        // run of this process could have used.
        leases: Mutex::new(LeaseTable::starting_at(now_ms().saturating_mul(1000))),
        grant_lock: tokio::sync::Mutex::new(()),
        lease_cfg: opts.config.leases.clone(),
        started_ms: now_ms(),
        webhook,
        alert_dirty: Mutex::new(BTreeSet::new()),
        policy_cache: Mutex::new(HashMap::new()),
        shutdown: shutdown_rx.clone(),
    });

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
            let (a, _task) = crate::http::serve(addr, metrics.clone(), async move {
                let _ = rx.wait_for(|v| *v).await;
            })
            .await
            .map_err(|source| ServeError::Bind { addr, source })?;
            Some(a)
        }
        None => None,
    };

    spawn_loops(state.clone(), shutdown_rx.clone());

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

fn spawn_loops(state: Arc<State>, shutdown: watch::Receiver<bool>) {
    // Lease settlement and the ledger's sweep, every second.
    let s = state.clone();
    let mut stop = shutdown.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.wait_for(|v| *v) => break,
            }
            settle_due_leases(&s).await;
            match s.ledger.sweep(1000).await {
                Ok(r) => {
                    s.metrics.batches_pruned.inc_by(r.batches_pruned);
                }
                Err(e) => tracing::warn!(error = %e, "ledger sweep failed"),
            }
            // Replicas: push what another replica changed; forget ended windows.
            if let Err(e) = crate::admin_svc::sync_policies_from_store(&s).await {
                tracing::warn!(error = %e, "policy sync from the store failed");
            }
            if let Err(e) = s.policy.prune_windows(now_ms()).await {
                tracing::warn!(error = %e, "pruning ended quota windows failed");
            }
        }
    });
    // Alert evaluation for tenants with new usage, then webhook delivery.
    let s = state.clone();
    let mut stop = shutdown.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.wait_for(|v| *v) => break,
            }
            evaluate_alerts(&s).await;
            deliver_webhooks(&s).await;
            crate::shadow::evaluate(&s).await;
        }
    });
    // After the relearn window: serve the demand that arrived during it.
    let s = state;
    let mut stop = shutdown;
    tokio::spawn(async move {
        let wait = s.relearn_until_ms().saturating_sub(now_ms());
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(wait + 10)) => {}
            _ = stop.wait_for(|v| *v) => return,
        }
        crate::sidecar_svc::grant_deferred(&s).await;
    });
}

/// Settles leases whose expiry plus grace has passed (the "never came back" rule; see
/// [`crate::lease`]).
pub async fn settle_due_leases(state: &State) {
    let now = now_ms();
    let grace = state.lease_cfg.settle_grace_secs.saturating_mul(1000);
    // Every lease stays in the table for the grace after its expiry: late batches still
    // draw from a wallet lease's hold, and the closing return a sidecar sends when a
    // window lease expires still hands its unspent credits back to the window's claim.
    let due: Vec<_> = {
        let mut t = state.lease_table();
        let ids = t.due(now, grace);
        ids.into_iter().filter_map(|id| t.remove(&id)).collect()
    };
    for l in due {
        crate::sidecar_svc::forget_lease(state, &l.sidecar, &l.lease_id).await;
        if let Backing::Hold { hold_id } = l.backing {
            settle_hold(state, &l.limit.tenant, hold_id, &l.sidecar, true).await;
        }
    }
    // Grants recorded by a replica that died before it ended them.
    if let Err(e) = state.policy.prune_leases(now.saturating_sub(grace)).await {
        tracing::debug!(error = %e, "pruning ended leases failed");
    }
}

/// Ends the hold behind a wallet lease; counts it as unreported when its sidecar is gone.
pub async fn settle_hold(
    state: &State,
    tenant: &str,
    hold_id: u64,
    sidecar: &str,
    at_expiry: bool,
) {
    let Ok(t) = TenantId::new(tenant) else { return };
    // `settle_hold` commits a timeout that passed and returns the final state, so what is
    // counted is what the store released, whoever ended the hold.
    match state
        .ledger
        .settle_hold(&t, tollgate_ledger::HoldId(hold_id))
        .await
    {
        Ok(h) => {
            if at_expiry && !state.sessions.is_live(sidecar) {
                state.metrics.leases_unreported.inc();
                state
                    .metrics
                    .leases_unreported_micro
                    .inc_by(h.released.micros());
                tracing::info!(
                    tenant,
                    hold_id,
                    sidecar,
                    released = h.released.micros(),
                    "lease settled at expiry without its sidecar"
                );
            }
        }
        Err(e) => tracing::warn!(tenant, hold_id, error = %e, "settling a lease failed"),
    }
}

async fn evaluate_alerts(state: &State) {
    let tenants: Vec<String> = {
        let mut d = state
            .alert_dirty
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        std::mem::take(&mut *d).into_iter().collect()
    };
    for tenant in tenants {
        let Ok(t) = TenantId::new(tenant.as_str()) else {
            continue;
        };
        let events = match state.ledger.evaluate_alerts(&t).await {
            Ok(e) => e,
            Err(e) => {
                tracing::warn!(tenant, error = %e, "alert evaluation failed");
                continue;
            }
        };
        if events.is_empty() {
            continue;
        }
        let rules = state.policy.alert_rules(&tenant).await.unwrap_or_default();
        for ev in events {
            let Some(rule) = rules
                .iter()
                .find(|r| r.id == ev.rule_id)
                .filter(|r| !r.webhook_url.is_empty())
            else {
                continue;
            };
            let secret = rule.webhook_secret.as_bytes().to_vec();
            if !state.webhook.can_sign(&secret) {
                tracing::warn!(
                    tenant,
                    rule = ev.rule_id,
                    "alert fired but neither the rule nor the authority has a webhook secret; not delivered"
                );
                continue;
            }
            let w = PendingWebhook {
                delivery: format!("{}-{}-{}", ev.tenant, ev.rule_id, ev.audit_seq),
                url: rule.webhook_url.clone(),
                body: serde_json::to_vec(&ev).unwrap_or_default(),
                secret,
                attempts: 0,
            };
            // Queued first: a restart or a dead replica delays the delivery, never loses it.
            if let Err(e) = state.policy.enqueue_webhook(&w, now_ms()).await {
                tracing::error!(tenant, delivery = w.delivery, error = %e, "cannot queue an alert webhook");
            }
        }
    }
}

/// Claims due webhooks and sends each in its own task (a slow receiver delays only its
/// own deliveries). A claim lasts a minute, longer than an attempt's 10 s timeout.
async fn deliver_webhooks(state: &Arc<State>) {
    let sender = state.webhook.clone();
    let now = now_ms();
    let due = match state.policy.claim_webhooks(now, 60_000, 64).await {
        Ok(d) => d,
        Err(e) => {
            tracing::warn!(error = %e, "claiming webhooks failed");
            return;
        }
    };
    for w in due {
        let (sender, state) = (sender.clone(), state.clone());
        tokio::spawn(async move { sender.attempt_queued(&state.policy, w, now).await });
    }
}

/// Reads a file into a string, naming it in the error.
pub fn read_file(path: &PathBuf) -> Result<String, std::io::Error> {
    std::fs::read_to_string(path)
}

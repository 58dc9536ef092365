//! The sidecar service: `Register` and the per-sidecar `Session` stream.
//!
//! Session pipeline (per sidecar): the reader verifies each batch's signature and converts
//! it, submits it to the group-commit [`crate::ingest`] committer without waiting, and
//! queues the pending commit for the acker, which sends the `BatchAck`s in order as the
//! commits complete. Up to [`MAX_IN_FLIGHT`] batches per session are in flight, so one
//! slow fsync never idles a sidecar. A batch is acknowledged only after its commit.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use ed25519_dalek::{Signature, VerifyingKey};
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;
use tollgate_core::Credits;
use tollgate_ledger::{
    BatchKey, BatchOutcome, LedgerError, Name, TenantId, UsageBatch, UsageRecord,
};
use tollgate_proto::v1::sidecar_service_server::SidecarService;
use tollgate_proto::v1::{
    AckStatus, BatchAck, DemandReport, Heartbeat, Lease, LeaseReturn, LimitKey, RegisterRequest,
    RegisterResponse, SessionDown, SessionUp, session_down, session_up,
};
use tonic::{Request, Response, Status, Streaming};

use crate::auth::Principal;
use crate::convert::{self, invalid};
use crate::lease::{Backing, Demand, LeaseState};
pub use crate::leasing::{close_lease, forget_lease, grant_deferred, grant_for};
use crate::metrics::Metrics;
use crate::sessions::{DownTx, Registration, send_now};
use crate::state::{State, ledger_status, now_ms};

/// Batches of one session submitted and not yet acknowledged, at most.
pub const MAX_IN_FLIGHT: usize = 64;
/// Most tenants one Register may name (a pod serves a handful).
pub const MAX_REGISTER_TENANTS: usize = 64;
/// Most held leases one Register may list.
pub const MAX_HELD_LEASES: usize = 4096;

/// The service.
#[derive(Debug, Clone)]
pub struct SidecarSvc {
    state: Arc<State>,
}

impl SidecarSvc {
    /// Over shared state.
    pub fn new(state: Arc<State>) -> SidecarSvc {
        SidecarSvc { state }
    }
}

fn sidecar_principal(
    state: &State,
    md: &tonic::metadata::MetadataMap,
) -> Result<(Principal, String), Status> {
    let p = state.auth.authenticate(md)?;
    match &p {
        Principal::Sidecar { name, .. } => {
            let name = name.clone();
            Ok((p, name))
        }
        _ => Err(Status::permission_denied(
            "the sidecar service needs a sidecar credential (a token from the config's [[sidecars]])",
        )),
    }
}

#[tonic::async_trait]
impl SidecarService for SidecarSvc {
    async fn register(
        &self,
        req: Request<RegisterRequest>,
    ) -> Result<Response<RegisterResponse>, Status> {
        let (md, _, r) = req.into_parts();
        register(&self.state, &md, r).await.map(Response::new)
    }

    type SessionStream = ReceiverStream<Result<SessionDown, Status>>;

    async fn session(
        &self,
        req: Request<Streaming<SessionUp>>,
    ) -> Result<Response<Self::SessionStream>, Status> {
        let (md, _, stream) = req.into_parts();
        let (handler, rx) = SessionHandler::open(self.state.clone(), &md)?;
        tokio::spawn(run_session(handler, stream));
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

/// Reads the stream into the handler until it ends, fails, the handler ends the session
/// or the authority shuts down.
async fn run_session(mut handler: SessionHandler, mut stream: Streaming<SessionUp>) {
    let mut shutdown = handler.state.shutdown.clone();
    loop {
        let next = tokio::select! {
            m = stream.message() => m,
            _ = async { let _ = shutdown.wait_for(|v| *v).await; } => {
                let _ = handler.tx.send(Err(Status::unavailable("the authority is shutting down; reconnect"))).await;
                break;
            }
        };
        let msg = match next {
            Ok(Some(m)) => m,
            Ok(None) => break,
            Err(e) => {
                tracing::debug!(sidecar = handler.sid, error = %e, "session stream ended");
                break;
            }
        };
        if handler.on_up(msg).await.is_err() {
            break;
        }
    }
    handler.close().await;
}

/// Downstream messages of a session, as [`SessionHandler::open`] returns them.
pub type DownRx = mpsc::Receiver<Result<SessionDown, Status>>;

/// One sidecar's session, independent of the transport: the gRPC `Session` feeds it the
/// messages of its stream; the deterministic simulation (`sim/`) feeds it messages from
/// its simulated network. What goes down (grants, acknowledgements, pushes, the status
/// that ends the session) is on the [`DownRx`] that [`SessionHandler::open`] returns.
///
/// Batches are verified and submitted to the group-commit ingest without waiting; an
/// acker task sends their `BatchAck`s in order as the commits complete (at most
/// [`MAX_IN_FLIGHT`] in flight).
#[derive(Debug)]
pub struct SessionHandler {
    state: Arc<State>,
    sid: String,
    reg: Registration,
    generation: u64,
    tx: DownTx,
    durable: Arc<AtomicU64>,
    commits: mpsc::Sender<Commit>,
    acker: tokio::task::JoinHandle<()>,
}

impl SessionHandler {
    /// Opens the session of the registered sidecar that `md` names (its credential in
    /// `authorization`, its id in the sidecar-id header), replacing any older session of
    /// it. Needs a tokio runtime (it spawns the acker).
    pub fn open(
        state: Arc<State>,
        md: &tonic::metadata::MetadataMap,
    ) -> Result<(SessionHandler, DownRx), Status> {
        let (_, cred) = sidecar_principal(&state, md)?;
        let sid = md
            .get(tollgate_proto::SIDECAR_ID_HEADER)
            .ok_or_else(|| {
                Status::invalid_argument(format!(
                    "missing `{}` metadata: name the registered sidecar",
                    tollgate_proto::SIDECAR_ID_HEADER
                ))
            })?
            .to_str()
            .map_err(|_| invalid(tollgate_proto::SIDECAR_ID_HEADER, "is not ASCII"))?
            .to_string();
        let reg = state.sessions.registration(&sid).ok_or_else(|| {
            Status::failed_precondition(format!(
                "sidecar {sid:?} is not registered: call Register first"
            ))
        })?;
        if reg.credential != cred {
            return Err(Status::permission_denied(format!(
                "sidecar {sid:?} was registered with another credential"
            )));
        }
        let (tx, rx) = mpsc::channel(1024);
        let generation = state.sessions.open(&sid, reg.tenants.clone(), tx.clone());
        state.metrics.sessions.inc();
        let durable = Arc::new(AtomicU64::new(0));
        let (commits, crx) = mpsc::channel::<Commit>(MAX_IN_FLIGHT);
        let acker = tokio::spawn(ack_loop(
            state.clone(),
            sid.clone(),
            crx,
            tx.clone(),
            durable.clone(),
        ));
        Ok((
            SessionHandler {
                state,
                sid,
                reg,
                generation,
                tx,
                durable,
                commits,
                acker,
            },
            rx,
        ))
    }

    /// The sidecar id.
    pub fn sidecar_id(&self) -> &str {
        &self.sid
    }

    /// Handles one message from the sidecar. `Err`: the session ends (the status was sent
    /// down when there is one to tell the sidecar).
    pub async fn on_up(&mut self, msg: SessionUp) -> Result<(), Status> {
        let state = &self.state;
        let tx = &self.tx;
        match msg.msg {
            Some(session_up::Msg::Batch(b)) => {
                let seq = b.seq;
                let item = match prepare_batch(&self.sid, &self.reg, b) {
                    Ok(batch) => {
                        #[cfg(tollgate_sim_broken)]
                        let batch = broken_idempotency_key(batch, self.generation);
                        let (reply, wait) = oneshot::channel();
                        if state.ingest.submit(batch, reply).await.is_err() {
                            let st = Status::unavailable("the authority is shutting down");
                            let _ = tx.send(Err(st.clone())).await;
                            return Err(st);
                        }
                        (seq, Ok(wait))
                    }
                    Err(why) => (seq, Err(why)),
                };
                if self.commits.send(Commit::Batch(item)).await.is_err() {
                    return Err(Status::internal("the session's acker stopped"));
                }
            }
            Some(session_up::Msg::Demand(d)) => {
                if let Err(st) = handle_demand(state, &self.sid, &self.reg, d, tx).await {
                    let _ = tx.send(Err(st.clone())).await;
                    return Err(st);
                }
            }
            Some(session_up::Msg::LeaseReturn(r)) => {
                handle_return(state, &self.sid, r, self.durable.load(Ordering::Acquire)).await;
            }
            Some(session_up::Msg::TaskOpen(t)) => {
                crate::task_budget::open(state, &self.sid, &self.reg, t).await;
            }
            Some(session_up::Msg::Heartbeat(_)) => {
                send_now(
                    tx,
                    SessionDown {
                        msg: Some(session_down::Msg::Heartbeat(Heartbeat {
                            unix_ms: now_ms(),
                        })),
                    },
                );
            }
            None => {}
        }
        Ok(())
    }

    /// Waits until every batch handed to [`SessionHandler::on_up`] so far is committed (or
    /// failed) and its acknowledgement sent, with what follows an acknowledgement (closing
    /// leases whose batches are durable). Production never waits for this (acks overlap
    /// the next batches); the simulation does, so that each step's effects are complete
    /// and a run is reproducible. Returns at once if the acker has stopped.
    pub async fn settled(&self) {
        let (done, wait) = oneshot::channel();
        if self.commits.send(Commit::Barrier(done)).await.is_ok() {
            let _ = wait.await;
        }
    }

    /// Ends the session: the batches in flight are acknowledged first, then the session is
    /// closed and the durable sequence hint stored.
    pub async fn close(self) {
        let SessionHandler {
            state,
            sid,
            generation,
            durable,
            commits,
            acker,
            ..
        } = self;
        drop(commits);
        let _ = acker.await;
        if state.sessions.close(&sid, generation) {
            state.metrics.sessions.dec();
        } else {
            // Replaced by a newer session: that one counts itself.
            state.metrics.sessions.dec();
        }
        let d = durable.load(Ordering::Acquire);
        if d > 0 {
            let _ = state.policy.put_durable_hint(&sid, d).await;
        }
    }
}

/// `Register` without the transport: authenticates the sidecar credential in `md`
/// (`authorization: Bearer <token>`), records the registration, relearns the leases it
/// reports holding and answers with its durable sequence, policies and price books. The
/// gRPC service and the deterministic simulation (`sim/`) both call it.
pub async fn register(
    state: &State,
    md: &tonic::metadata::MetadataMap,
    r: RegisterRequest,
) -> Result<RegisterResponse, Status> {
    let (p, cred) = sidecar_principal(state, md)?;
    let sid = convert::plain_id("sidecar_id", &r.sidecar_id)?;
    if r.tenants.is_empty() {
        return Err(invalid(
            "tenants",
            "list at least one tenant this sidecar serves",
        ));
    }
    // Bounded before any per-entry work (each tenant costs store reads).
    if r.tenants.len() > MAX_REGISTER_TENANTS || r.held_leases.len() > MAX_HELD_LEASES {
        Metrics::count(&state.metrics.refused, "register_too_large");
        return Err(invalid(
            if r.tenants.len() > MAX_REGISTER_TENANTS {
                "tenants"
            } else {
                "held_leases"
            },
            format!(
                "a Register may name at most {MAX_REGISTER_TENANTS} tenants and {MAX_HELD_LEASES} held leases (got {} and {})",
                r.tenants.len(),
                r.held_leases.len()
            ),
        ));
    }
    let mut tenants = Vec::with_capacity(r.tenants.len());
    for (i, t) in r.tenants.iter().enumerate() {
        let t = convert::tenant_id(&format!("tenants[{i}]"), t)?;
        p.check_tenant(&t)?;
        let tid = TenantId::new(t.as_str()).map_err(|e| invalid("tenants", e))?;
        state.ledger.config(&tid).await.map_err(ledger_status)?;
        if !tenants.contains(&t) {
            tenants.push(t);
        }
    }
    let key: [u8; 32] = r.public_key.as_slice().try_into().map_err(|_| {
        invalid(
            "public_key",
            format!(
                "must be the 32 bytes of an ed25519 public key, got {} bytes",
                r.public_key.len()
            ),
        )
    })?;
    let public_key = VerifyingKey::from_bytes(&key)
        .map_err(|_| invalid("public_key", "is not a valid ed25519 public key"))?;
    if let Some(prev) = state.sessions.registration(&sid)
        && prev.credential != cred
    {
        return Err(Status::permission_denied(format!(
            "sidecar id {sid:?} is registered with another credential"
        )));
    }
    // The id belongs to the first credential that registered it (stored, so it holds
    // across restarts and replicas): another credential's sidecar must never post
    // under it, or its batches would shadow the owner's (same keys) and draw on the
    // owner's holds.
    let owner = state
        .policy
        .claim_sidecar(&sid, &cred, &tenants, now_ms())
        .await
        .map_err(|e| Status::unavailable(e.to_string()))?;
    if owner != cred {
        Metrics::count(&state.metrics.refused, "sidecar_id_owned");
        tracing::warn!(
            sidecar = sid,
            credential = cred,
            owner,
            "sidecar id registered by another credential; refused"
        );
        return Err(Status::permission_denied(format!(
            "sidecar id {sid:?} belongs to another credential: give this sidecar its own id"
        )));
    }
    state.sessions.register(
        &sid,
        Registration {
            credential: cred,
            tenants: tenants.clone(),
            public_key,
        },
    );
    let honoured = relearn(state, &sid, &tenants, &r.held_leases).await;
    let durable = durable_through(state, &sid).await?;
    let mut policies = Vec::new();
    let mut books = Vec::new();
    for t in &tenants {
        policies.push(crate::policy_push::policy_view(state, t).await?);
        if let Some(b) = crate::policy_push::price_book_view(state, t).await? {
            books.push(b);
        }
    }
    tracing::info!(
        sidecar = sid,
        ?tenants,
        held = r.held_leases.len(),
        honoured = honoured.len(),
        durable,
        "sidecar registered"
    );
    Ok(RegisterResponse {
        durable_through_seq: durable,
        policies,
        price_books: books,
        honoured_lease_ids: honoured,
        relearn_until_unix_ms: state.relearn_until_ms(),
        lease_ttl_ms: state.lease_cfg.ttl_secs.saturating_mul(1000),
        heartbeat_interval_ms: 10_000,
        server_unix_ms: now_ms(),
    })
}

/// What the acker works through, in order.
#[derive(Debug)]
enum Commit {
    /// A batch's sequence and its pending commit (or why it was rejected).
    Batch(
        (
            u64,
            Result<oneshot::Receiver<Result<BatchOutcome, LedgerError>>, String>,
        ),
    ),
    /// Answered once everything before it is acknowledged ([`SessionHandler::settled`]).
    Barrier(oneshot::Sender<()>),
}

async fn ack_loop(
    state: Arc<State>,
    sid: String,
    mut rx: mpsc::Receiver<Commit>,
    tx: DownTx,
    durable: Arc<AtomicU64>,
) {
    let mut since_hint = 0u32;
    while let Some(next) = rx.recv().await {
        let (seq, item) = match next {
            Commit::Batch(b) => b,
            Commit::Barrier(done) => {
                let _ = done.send(());
                continue;
            }
        };
        let ack = match item {
            Err(why) => {
                Metrics::count(&state.metrics.batches, "rejected");
                tracing::warn!(sidecar = sid, seq, why, "batch rejected");
                BatchAck {
                    seq,
                    status: AckStatus::Rejected as i32,
                    error: why,
                    records: 0,
                    rated_micro: 0,
                }
            }
            Ok(wait) => match wait.await {
                Ok(Ok(o)) => {
                    durable.fetch_max(seq, Ordering::AcqRel);
                    if !o.duplicate {
                        note_suspect(&state, &sid, seq, &o);
                        note_rating(&state, &sid, seq, &o);
                        crate::task_budget::closed(&state, &o).await;
                    }
                    {
                        let mut dirty = state
                            .alert_dirty
                            .lock()
                            .unwrap_or_else(std::sync::PoisonError::into_inner);
                        for t in &o.tenants {
                            if !dirty.contains(t.tenant.as_str()) {
                                dirty.insert(t.tenant.as_str().to_string());
                            }
                        }
                    }
                    let status = if o.duplicate {
                        Metrics::count(&state.metrics.batches, "duplicate");
                        AckStatus::Duplicate
                    } else {
                        Metrics::count(&state.metrics.batches, "accepted");
                        AckStatus::Accepted
                    };
                    BatchAck {
                        seq,
                        status: status as i32,
                        error: String::new(),
                        records: o.records,
                        rated_micro: o.tenants.iter().map(|t| t.rated.micros()).sum(),
                    }
                }
                Ok(Err(e @ LedgerError::BatchConflict { .. })) => {
                    // Not a retry: another batch under a key already posted. Loud, since
                    // it means a broken or hostile sender (or a reused sidecar id).
                    Metrics::count(&state.metrics.batches, "conflict");
                    tracing::warn!(sidecar = sid, seq, error = %e, "batch key re-sent with different content; refused");
                    BatchAck {
                        seq,
                        status: AckStatus::Rejected as i32,
                        error: e.to_string(),
                        records: 0,
                        rated_micro: 0,
                    }
                }
                Ok(Err(
                    e @ (LedgerError::InvalidInput(_)
                    | LedgerError::UnknownTenant(_)
                    | LedgerError::Overflow(_)),
                )) => {
                    Metrics::count(&state.metrics.batches, "rejected");
                    BatchAck {
                        seq,
                        status: AckStatus::Rejected as i32,
                        error: e.to_string(),
                        records: 0,
                        rated_micro: 0,
                    }
                }
                Ok(Err(e)) => {
                    // Not committed: end the session; the sidecar re-sends after reconnecting.
                    let _ = tx
                        .send(Err(Status::unavailable(format!(
                            "batch {seq} was not committed ({e}); reconnect and re-send"
                        ))))
                        .await;
                    return;
                }
                Err(_) => return,
            },
        };
        if tx
            .send(Ok(SessionDown {
                msg: Some(session_down::Msg::Ack(ack)),
            }))
            .await
            .is_err()
        {
            return;
        }
        let d = durable.load(Ordering::Acquire);
        let closable = state.lease_table().closable(&sid, d);
        for id in closable {
            close_lease(&state, &id, false).await;
        }
        since_hint += 1;
        if since_hint >= 256 {
            since_hint = 0;
            let _ = state.policy.put_durable_hint(&sid, d).await;
        }
    }
}

/// The deliberately broken variant the simulation must catch (`--cfg
/// tollgate_sim_broken`, set only by `.ci/sim.sh` in its own target dir): batches keyed
/// per session, so a batch re-sent on a new session (the sidecar's replay after a
/// reconnect) is posted again instead of being recognised as a duplicate.
#[cfg(tollgate_sim_broken)]
fn broken_idempotency_key(mut batch: UsageBatch, generation: u64) -> UsageBatch {
    batch.key.seq = batch
        .key
        .seq
        .saturating_add(generation.saturating_mul(1 << 32));
    batch
}

/// Verifies and converts a wire batch; the error says why it is rejected.
pub fn prepare_batch(
    sid: &str,
    reg: &Registration,
    b: tollgate_proto::v1::UsageBatch,
) -> Result<UsageBatch, String> {
    if b.seq == 0 {
        return Err("seq: batch sequence numbers start at 1".into());
    }
    let sig: [u8; 64] = b.signature.as_slice().try_into().map_err(|_| {
        format!(
            "signature: must be 64 bytes of ed25519 signature, got {}",
            b.signature.len()
        )
    })?;
    // One SHA-256 pass over the canonical encoding; the signature covers the digest, and
    // the ledger stores it.
    let digest = tollgate_proto::signing::batch_digest(sid, &b);
    let msg = tollgate_proto::signing::signing_bytes_from_digest(&digest);
    reg.public_key
        .verify_strict(&msg, &Signature::from_bytes(&sig))
        .map_err(|_| {
            format!("signature: does not verify with the key sidecar {sid:?} registered")
        })?;
    let digest = hex::encode(digest);
    // Resolve each dictionary entry once: the records share one copy of each name.
    let mut tenant_of: Vec<Option<TenantId>> = vec![None; b.dictionary.len()];
    let mut names: Vec<Option<Name>> = vec![None; b.dictionary.len()];
    let mut name = |i: u32, rec: usize, field: &str| -> Result<Name, String> {
        match names.get(i as usize) {
            Some(Some(n)) => Ok(n.clone()),
            Some(None) => {
                let n: Name = b.dictionary[i as usize].as_str().into();
                names[i as usize] = Some(n.clone());
                Ok(n)
            }
            None => Err(format!(
                "records[{rec}].{field}: index {i} is outside the dictionary ({} entries)",
                b.dictionary.len()
            )),
        }
    };
    let mut records = Vec::with_capacity(b.records.len());
    for (i, r) in b.records.iter().enumerate() {
        let ti = r.tenant as usize;
        let tenant = match tenant_of.get(ti) {
            Some(Some(t)) => t.clone(),
            _ => {
                let name = b.string(r.tenant).ok_or_else(|| {
                    format!(
                        "records[{i}].tenant: index {} is outside the dictionary ({} entries)",
                        r.tenant,
                        b.dictionary.len()
                    )
                })?;
                if !reg.tenants.iter().any(|t| t == name) {
                    return Err(format!(
                        "records[{i}].tenant: this sidecar is not registered for tenant {name:?} (permission denied)"
                    ));
                }
                let t = TenantId::new(name).map_err(|e| format!("records[{i}].tenant: {e}"))?;
                tenant_of[ti] = Some(t.clone());
                t
            }
        };
        records.push(UsageRecord {
            tenant,
            agent: name(r.agent, i, "agent")?,
            agent_instance: name(r.agent_instance, i, "agent_instance")?,
            model: name(r.model, i, "model")?,
            feature: name(r.feature, i, "feature")?,
            task: name(r.task, i, "task")?,
            tier: convert::tier(r.tier).map_err(|e| format!("records[{i}].tier: {e}"))?,
            initiator: convert::initiator(r.initiator)
                .map_err(|e| format!("records[{i}].initiator: {e}"))?,
            input_tokens: r.input_tokens,
            output_tokens: r.output_tokens,
            outcomes: r.outcomes,
            price_book_version: r.price_book_version,
            client_amount: Credits(r.client_rated_micro),
            at: r.at_unix_ms / 1000,
            calls: u64::from(r.calls.max(1)),
            work_units: u64::from(r.work_units),
            pre_rated: r.pre_rated,
            aggregate: r.aggregate,
        });
    }
    Ok(UsageBatch {
        key: BatchKey {
            sidecar_id: sid.to_string(),
            seq: b.seq,
        },
        records,
        digest: Some(digest),
        signature: Some(hex::encode(sig)),
    })
}

/// Highest durable batch seq of `sid`: the stored hint, probed forward in the ledger.
async fn durable_through(state: &State, sid: &str) -> Result<u64, Status> {
    let mut seq = state
        .policy
        .durable_hint(sid)
        .await
        .map_err(|e| Status::unavailable(e.to_string()))?;
    for _ in 0..1_000_000 {
        let key = BatchKey {
            sidecar_id: sid.to_string(),
            seq: seq + 1,
        };
        match state.ledger.batch(&key).await.map_err(ledger_status)? {
            Some(_) => seq += 1,
            None => break,
        }
    }
    Ok(seq)
}

/// Rebuilds leases a sidecar reports holding (after an authority restart); returns the
/// ids honoured. Only what the store recorded as granted to this sidecar is believed:
/// its id, limit, amount and expiry come from the stored grant, never from the report
/// (which contributes only how much is left unspent). Anything else is ignored and
/// counted (`refused_total{result="forged_lease"}`).
async fn relearn(
    state: &State,
    sid: &str,
    tenants: &[String],
    held: &[tollgate_proto::v1::HeldLease],
) -> Vec<String> {
    let now = now_ms();
    let mut honoured = Vec::new();
    let mut forged = 0u64;
    for hl in held {
        if let Some(l) = state.lease_table().get(&hl.lease_id) {
            if l.sidecar == sid {
                honoured.push(hl.lease_id.clone());
            }
            continue;
        }
        let granted = match state.policy.lease(sid, &hl.lease_id).await {
            Ok(Some(l)) => l,
            Ok(None) => {
                forged += 1;
                continue;
            }
            Err(e) => {
                tracing::warn!(sidecar = sid, lease = hl.lease_id, error = %e, "reading a granted lease failed; not honoured");
                continue;
            }
        };
        if let Some(l) = relearned(state, sid, tenants, &granted, hl.remaining_micro, now).await {
            state.lease_table().insert(l);
            honoured.push(hl.lease_id.clone());
        }
    }
    if forged > 0 {
        state
            .metrics
            .refused
            .get_or_create(&crate::metrics::ResultLabel {
                result: "forged_lease".into(),
            })
            .inc_by(forged);
        tracing::warn!(
            sidecar = sid,
            forged,
            "Register listed leases never granted to this sidecar; ignored"
        );
    }
    honoured
}

/// The lease table entry for a stored grant still in force, `None` if it ended.
async fn relearned(
    state: &State,
    sid: &str,
    tenants: &[String],
    granted: &Lease,
    remaining: u64,
    now: u64,
) -> Option<LeaseState> {
    if granted.expires_unix_ms <= now {
        return None;
    }
    let limit = granted.limit.clone()?;
    if !tenants.contains(&limit.tenant) {
        return None;
    }
    let parts: Vec<&str> = granted.lease_id.split('/').collect();
    let backing = match parts.as_slice() {
        ["h", t, id] if *t == limit.tenant && limit.is_wallet() => {
            let id = id.parse::<u64>().ok()?;
            let tid = TenantId::new(*t).ok()?;
            let open = state
                .ledger
                .holds(&tid, false)
                .await
                .unwrap_or_default()
                .into_iter()
                .any(|h| h.id.0 == id && h.owner == sid);
            if !open {
                return None;
            }
            Backing::Hold { hold_id: id }
        }
        ["w", t, rule, ws, _] if *t == limit.tenant => Backing::Window {
            rule_id: (*rule).to_string(),
            window_start_ms: ws.parse::<u64>().ok()?,
        },
        ["u", t, _] if *t == limit.tenant => Backing::Unbounded,
        ["k", t, _] if *t == limit.tenant && !limit.task.is_empty() => Backing::Task {
            task: limit.task.clone(),
        },
        _ => return None,
    };
    let amount = granted.amount_micro;
    let returned = match backing {
        // Window and task accounting counts what was granted, spent or not.
        Backing::Window { .. } | Backing::Task { .. } => 0,
        _ => amount.saturating_sub(remaining.min(amount)),
    };
    Some(LeaseState {
        lease_id: granted.lease_id.clone(),
        sidecar: sid.to_string(),
        limit_key: limit.canonical(),
        limit,
        amount,
        returned,
        expires_ms: granted.expires_unix_ms,
        backing,
        closing_after_seq: None,
    })
}

/// Why a limit key names no limit, if it does not: every enum value defined, a window
/// on every scope but the tenant's wallet, an agent exactly for the agent scope, a tier
/// exactly for the tier scope and a task exactly for the task scope.
pub fn undefined_limit(limit: &LimitKey) -> Option<String> {
    use tollgate_proto::v1::{Scope, Tier, Window};
    let scope = Scope::try_from(limit.scope).ok();
    let window = Window::try_from(limit.window).ok();
    let tier = Tier::try_from(limit.tier).ok();
    let Some(scope) = scope else {
        return Some(format!("scope {} is not defined", limit.scope));
    };
    let Some(window) = window else {
        return Some(format!("window {} is not defined", limit.window));
    };
    let Some(tier) = tier else {
        return Some(format!("tier {} is not defined", limit.tier));
    };
    let has_task = !limit.task.is_empty();
    if has_task && !tollgate_ledger::task::valid_task_id(&limit.task) {
        return Some("a task id is 1 to 128 bytes without control characters".into());
    }
    match scope {
        Scope::Tenant if !limit.agent.is_empty() || tier != Tier::Unspecified || has_task => {
            Some("a tenant limit names no agent, tier or task".into())
        }
        Scope::Agent if limit.agent.is_empty() || tier != Tier::Unspecified || has_task => {
            Some("an agent limit names its agent and no tier or task".into())
        }
        Scope::Tier if tier == Tier::Unspecified || !limit.agent.is_empty() || has_task => {
            Some("a tier limit names its tier and no agent or task".into())
        }
        Scope::Task if !has_task || !limit.agent.is_empty() || tier != Tier::Unspecified => {
            Some("a task limit names its task and no agent or tier".into())
        }
        Scope::Task if window != Window::None => Some("a task's budget has no window".into()),
        Scope::Agent | Scope::Tier if window == Window::None => {
            Some("only the tenant's wallet has no window".into())
        }
        _ => None,
    }
}

async fn handle_demand(
    state: &Arc<State>,
    sid: &str,
    reg: &Registration,
    d: DemandReport,
    tx: &DownTx,
) -> Result<(), Status> {
    let now = now_ms();
    let mut limits = Vec::with_capacity(d.demands.len());
    for (i, ld) in d.demands.into_iter().enumerate() {
        let limit = ld
            .limit
            .ok_or_else(|| invalid(&format!("demand.demands[{i}].limit"), "is missing"))?;
        if !reg.tenants.contains(&limit.tenant) {
            return Err(Status::permission_denied(format!(
                "demand.demands[{i}]: this sidecar is not registered for tenant {:?}",
                limit.tenant
            )));
        }
        if let Some(why) = undefined_limit(&limit) {
            // No lease for a limit that does not exist; the others of the report are
            // still served.
            Metrics::count(&state.metrics.refused, "undefined_limit");
            tracing::warn!(
                sidecar = sid,
                limit = limit.canonical(),
                why,
                "demand on an undefined limit refused"
            );
            continue;
        }
        let key = limit.canonical();
        state.lease_table().set_demand(
            &key,
            sid,
            Demand {
                held: ld.held_micro,
                desired: ld.desired_micro,
                burn_per_sec: ld.burn_per_sec_micro,
                at_ms: now,
            },
        );
        limits.push(limit);
    }
    if !d.denials.is_empty()
        && let Err(e) = crate::denials::record(state, &reg.tenants, &d.denials).await
    {
        // Counts for dashboards: never a reason to fail the session.
        tracing::warn!(sidecar = sid, error = %e, "recording reported denials failed");
    }
    if state.relearning(now) {
        state.metrics.relearn_deferred.inc();
        return Ok(());
    }
    for limit in limits {
        grant_for(state, sid, &limit, tx).await;
    }
    Ok(())
}

async fn handle_return(state: &State, sid: &str, r: LeaseReturn, durable: u64) {
    let (close_now, release) = {
        let mut t = state.lease_table();
        let Some(l) = t.get_mut(&r.lease_id) else {
            return;
        };
        if l.sidecar != sid {
            return;
        }
        let before = l.returned;
        l.returned = l.returned.saturating_add(r.amount_micro).min(l.amount);
        let handed_back = l.returned - before;
        let release = match &l.backing {
            _ if handed_back == 0 => None,
            Backing::Window {
                rule_id,
                window_start_ms,
            } => Some(Release::Window {
                tenant: l.limit.tenant.clone(),
                rule: rule_id.clone(),
                window_start_ms: *window_start_ms,
                amount: handed_back,
            }),
            Backing::Hold { hold_id } => Some(Release::Hold {
                tenant: l.limit.tenant.clone(),
                hold_id: *hold_id,
                amount: handed_back,
            }),
            Backing::Task { task } => Some(Release::Window {
                tenant: l.limit.tenant.clone(),
                rule: crate::leasing::task_claim_rule(task),
                window_start_ms: 0,
                amount: handed_back,
            }),
            Backing::Unbounded => None,
        };
        let close_now = if r.close {
            if r.through_seq <= durable {
                true
            } else {
                l.closing_after_seq = Some(r.through_seq);
                false
            }
        } else {
            false
        };
        (close_now, release)
    };
    // What the sidecar handed back unspent is free for others now, not when the lease
    // ends: back to the window's claim, or out of the hold into the wallet.
    match release {
        Some(Release::Window {
            tenant,
            rule,
            window_start_ms,
            amount,
        }) => {
            if let Err(e) = state
                .policy
                .release_window(&tenant, &rule, window_start_ms, amount)
                .await
            {
                tracing::warn!(tenant, rule, error = %e, "returning window credits failed (they stay claimed until the window ends)");
            }
        }
        Some(Release::Hold {
            tenant,
            hold_id,
            amount,
        }) => {
            let reduced = match TenantId::new(tenant.as_str()) {
                Ok(t) => state
                    .ledger
                    .reduce_hold(&t, tollgate_ledger::HoldId(hold_id), Credits(amount))
                    .await
                    .map(|_| ())
                    .map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            };
            if let Err(e) = reduced {
                // Harmless: the hold keeps them until the lease is settled.
                tracing::debug!(tenant, hold_id, amount, error = %e, "handing lease credits back early failed");
            }
        }
        None => {}
    }
    state.metrics.leases_returned.inc();
    if close_now {
        close_lease(state, &r.lease_id, false).await;
    }
}

/// Credits a sidecar handed back, to free at once.
enum Release {
    Window {
        tenant: String,
        rule: String,
        window_start_ms: u64,
        amount: u64,
    },
    Hold {
        tenant: String,
        hold_id: u64,
        amount: u64,
    },
}

/// Records the book could not rate, and those charged as stated: counted, and the
/// unrateable ones logged (their price book needs fixing). Work units counted.
fn note_rating(state: &State, sid: &str, seq: u64, o: &BatchOutcome) {
    for t in &o.tenants {
        state.metrics.pre_rated_records.inc_by(t.pre_rated_records);
        state.metrics.work_units.inc_by(t.work_units);
        if t.unrated_records == 0 {
            continue;
        }
        state.metrics.unrated_records.inc_by(t.unrated_records);
        state
            .metrics
            .unrated_micro
            .inc_by(t.unrated_amount.micros());
        tracing::warn!(
            sidecar = sid,
            seq,
            tenant = t.tenant.as_str(),
            records = t.unrated_records,
            charged_micro = t.unrated_amount.micros(),
            "usage the price book cannot rate (unknown model or overflow): charged at the book's dearest model and at least the client's amount; fix the price book"
        );
    }
}

/// Usage past a sidecar's holds beyond the overrun allowance (the ledger did not charge
/// it, and recorded it in the batch's audit record): counted and logged.
fn note_suspect(state: &State, sid: &str, seq: u64, o: &BatchOutcome) {
    for t in o.tenants.iter().filter(|t| !t.suspect.is_zero()) {
        state.metrics.suspected_tampering.inc();
        state
            .metrics
            .suspected_tampering_micro
            .inc_by(t.suspect.micros());
        tracing::warn!(
            sidecar = sid,
            seq,
            tenant = t.tenant.as_str(),
            suspect_micro = t.suspect.micros(),
            charged_micro = t.charged().micros(),
            "usage past the sidecar's holds beyond the overrun allowance: not charged (suspected tampering)"
        );
    }
}

//! A **simulated** lease source, used only when the real authority cannot be started.
//!
//! It speaks the real sidecar protocol (Register + Session over gRPC on loopback) but keeps
//! the tenant's money in memory: one wallet with a hard cap, leases granted from it on
//! demand, signed batches verified and posted once per (sidecar, seq), returns credited
//! back. There is no ledger, no grants order and no audit chain; the demo says so plainly
//! when it runs on this.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use tokio::sync::mpsc;
use tokio_stream::{Stream, StreamExt, wrappers::ReceiverStream};
use tollgate_proto::v1::sidecar_service_server::{SidecarService, SidecarServiceServer};
use tollgate_proto::v1::{
    self, BatchAck, Lease, LeaseGrant, LimitKey, RegisterRequest, RegisterResponse, SessionDown,
    SessionUp, TenantPolicy, session_down, session_up,
};
use tonic::{Request, Response, Status, Streaming};

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Totals the simulated source keeps (what the real ledger would report).
#[derive(Debug, Default, Clone)]
pub struct Totals {
    /// Credits leased out and not returned (micro).
    pub leased_out: u64,
    /// Usage posted (micro).
    pub posted: u64,
    /// Records posted.
    pub records: u64,
    /// Batches posted (duplicates excluded).
    pub batches: u64,
    /// Duplicate batches seen (re-sends).
    pub duplicates: u64,
    /// By agent: (micro, calls).
    pub by_agent: BTreeMap<String, (u64, u64)>,
    /// By model: (micro, calls).
    pub by_model: BTreeMap<String, (u64, u64)>,
}

#[derive(Debug)]
struct Inner {
    tenant: String,
    /// The cap on everything leased (the wallet and the hard cap in one number).
    cap: u64,
    /// Leased out in total minus returned.
    outstanding: u64,
    policy: TenantPolicy,
    price_book: v1::PriceBook,
    keys: HashMap<String, Vec<u8>>,
    seen: HashMap<String, BTreeSet<u64>>,
    leases: HashMap<String, (String, u64)>,
    next_lease: u64,
    sessions: Vec<mpsc::Sender<Result<SessionDown, Status>>>,
    totals: Totals,
}

/// The simulated lease source.
#[derive(Debug, Clone)]
pub struct LocalSource {
    inner: Arc<Mutex<Inner>>,
}

fn lock(m: &Mutex<Inner>) -> std::sync::MutexGuard<'_, Inner> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl LocalSource {
    /// A source for one tenant whose total spend is capped at `cap` micro-credits.
    pub fn new(tenant: &str, cap: u64, price_book: v1::PriceBook) -> Self {
        LocalSource {
            inner: Arc::new(Mutex::new(Inner {
                tenant: tenant.into(),
                cap,
                outstanding: 0,
                policy: TenantPolicy {
                    tenant: tenant.into(),
                    version: 1,
                    hard_cap_micro: cap,
                    ..Default::default()
                },
                price_book: v1::PriceBook {
                    version: 1,
                    ..price_book
                },
                keys: HashMap::new(),
                seen: HashMap::new(),
                leases: HashMap::new(),
                next_lease: 1,
                sessions: Vec::new(),
                totals: Totals::default(),
            })),
        }
    }

    /// Serves on `127.0.0.1:0`; returns the address.
    pub async fn serve(&self) -> anyhow::Result<SocketAddr> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let svc = SidecarServiceServer::new(self.clone());
        tokio::spawn(async move {
            let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
            let _ = tonic::transport::Server::builder()
                .add_service(svc)
                .serve_with_incoming(incoming)
                .await;
        });
        Ok(addr)
    }

    /// A copy of the totals.
    pub fn totals(&self) -> Totals {
        lock(&self.inner).totals.clone()
    }

    /// Spendable left under the cap (not leased, not spent).
    pub fn left(&self) -> u64 {
        let g = lock(&self.inner);
        g.cap
            .saturating_sub(g.outstanding)
            .saturating_sub(g.totals.posted)
    }

    /// Lowers (or raises) the cap and pushes it, with a revocation down to the new ceiling.
    pub fn set_cap(&self, cap: u64) {
        let mut g = lock(&self.inner);
        g.cap = cap;
        g.policy.version += 1;
        g.policy.hard_cap_micro = cap;
        let ceiling = cap.saturating_sub(g.totals.posted) / g.sessions.len().max(1) as u64;
        let policy = g.policy.clone();
        let tenant = g.tenant.clone();
        g.sessions.retain(|s| {
            let a = s.try_send(Ok(SessionDown {
                msg: Some(session_down::Msg::Policy(v1::PolicyUpdate {
                    policy: Some(policy.clone()),
                })),
            }));
            let b = s.try_send(Ok(SessionDown {
                msg: Some(session_down::Msg::Revocation(v1::Revocation {
                    limit: Some(LimitKey::wallet(tenant.clone())),
                    ceiling_micro: ceiling,
                    lease_ids: vec![],
                    reason: "cap lowered".into(),
                })),
            }));
            a.is_ok() && b.is_ok()
        });
    }

    fn on_up(&self, sidecar: &str, msg: SessionUp) -> Vec<SessionDown> {
        let mut g = lock(&self.inner);
        let mut out = Vec::new();
        match msg.msg {
            Some(session_up::Msg::Demand(d)) => {
                for dem in d.demands {
                    let Some(limit) = dem.limit else { continue };
                    if limit.tenant != g.tenant {
                        continue;
                    }
                    let left = g
                        .cap
                        .saturating_sub(g.outstanding)
                        .saturating_sub(g.totals.posted);
                    let amount = dem.desired_micro.min(left);
                    if amount == 0 {
                        continue;
                    }
                    g.outstanding += amount;
                    g.totals.leased_out = g.outstanding;
                    let id = format!("local-{}", g.next_lease);
                    g.next_lease += 1;
                    g.leases.insert(id.clone(), (sidecar.to_string(), amount));
                    out.push(SessionDown {
                        msg: Some(session_down::Msg::Grant(LeaseGrant {
                            lease: Some(Lease {
                                lease_id: id,
                                limit: Some(limit),
                                amount_micro: amount,
                                expires_unix_ms: now_ms() + 60_000,
                            }),
                        })),
                    });
                }
            }
            Some(session_up::Msg::Batch(b)) => {
                let seq = b.seq;
                let verified = g.keys.get(sidecar).is_some_and(|k| {
                    let msg = tollgate_proto::signing::batch_signing_bytes(sidecar, &b);
                    match (
                        <[u8; 32]>::try_from(k.as_slice()),
                        <[u8; 64]>::try_from(b.signature.as_slice()),
                    ) {
                        (Ok(pk), Ok(sig)) => tollgate_sidecar::key::verify(&pk, &msg, &sig),
                        _ => false,
                    }
                });
                let status = if !verified {
                    v1::AckStatus::Rejected
                } else if !g.seen.entry(sidecar.to_string()).or_default().insert(seq) {
                    g.totals.duplicates += 1;
                    v1::AckStatus::Duplicate
                } else {
                    let mut sum = 0u64;
                    for r in &b.records {
                        let amt = r.client_rated_micro;
                        sum += amt;
                        let calls = u64::from(r.calls.max(1));
                        let agent = b.string(r.agent_instance).unwrap_or("?").to_string();
                        let model = b.string(r.model).unwrap_or("?").to_string();
                        let e = g.totals.by_agent.entry(agent).or_default();
                        e.0 += amt;
                        e.1 += calls;
                        let e = g.totals.by_model.entry(model).or_default();
                        e.0 += amt;
                        e.1 += calls;
                        g.totals.records += calls;
                    }
                    // Usage comes out of what was leased.
                    g.outstanding = g.outstanding.saturating_sub(sum);
                    g.totals.posted += sum;
                    g.totals.batches += 1;
                    g.totals.leased_out = g.outstanding;
                    v1::AckStatus::Accepted
                };
                out.push(SessionDown {
                    msg: Some(session_down::Msg::Ack(BatchAck {
                        seq,
                        status: status as i32,
                        error: if verified {
                            String::new()
                        } else {
                            "bad signature".into()
                        },
                        records: b.records.len() as u64,
                        rated_micro: 0,
                    })),
                });
            }
            Some(session_up::Msg::LeaseReturn(r)) => {
                if let Some((_, amt)) = g.leases.get_mut(&r.lease_id) {
                    let back = r.amount_micro.min(*amt);
                    *amt -= back;
                    g.outstanding = g.outstanding.saturating_sub(back);
                    g.totals.leased_out = g.outstanding;
                    if r.close {
                        g.leases.remove(&r.lease_id);
                    }
                }
            }
            _ => {}
        }
        out
    }
}

type DownStream = Pin<Box<dyn Stream<Item = Result<SessionDown, Status>> + Send>>;

#[tonic::async_trait]
impl SidecarService for LocalSource {
    async fn register(
        &self,
        req: Request<RegisterRequest>,
    ) -> Result<Response<RegisterResponse>, Status> {
        let r = req.into_inner();
        let mut g = lock(&self.inner);
        g.keys.insert(r.sidecar_id.clone(), r.public_key.clone());
        let durable = g
            .seen
            .get(&r.sidecar_id)
            .and_then(|s| s.iter().next_back().copied())
            .unwrap_or(0);
        let honoured = r
            .held_leases
            .iter()
            .filter(|h| g.leases.contains_key(&h.lease_id))
            .map(|h| h.lease_id.clone())
            .collect();
        Ok(Response::new(RegisterResponse {
            durable_through_seq: durable,
            policies: vec![g.policy.clone()],
            price_books: vec![g.price_book.clone()],
            honoured_lease_ids: honoured,
            relearn_until_unix_ms: 0,
            lease_ttl_ms: 60_000,
            heartbeat_interval_ms: 5_000,
            server_unix_ms: now_ms(),
        }))
    }

    type SessionStream = DownStream;

    async fn session(
        &self,
        req: Request<Streaming<SessionUp>>,
    ) -> Result<Response<Self::SessionStream>, Status> {
        let sidecar = req
            .metadata()
            .get(tollgate_proto::SIDECAR_ID_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
            .ok_or_else(|| Status::invalid_argument("missing x-tollgate-sidecar-id"))?;
        let mut up = req.into_inner();
        let (tx, rx) = mpsc::channel(1024);
        lock(&self.inner).sessions.push(tx.clone());
        let me = self.clone();
        tokio::spawn(async move {
            while let Some(Ok(msg)) = up.next().await {
                for d in me.on_up(&sidecar, msg) {
                    if tx.send(Ok(d)).await.is_err() {
                        return;
                    }
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

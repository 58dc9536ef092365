//! A recording relay between a sidecar and the real authority: `Register` and the
//! `Session` stream are forwarded unchanged (with their metadata: the bearer token and the
//! sidecar id), and every message the sidecar sends is kept, so a test checks exactly what
//! the authority receives (signed batches, task registrations, demands) while the real
//! authority verifies, posts and answers them.

use std::pin::Pin;
use std::sync::{Arc, Mutex};

use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::{Stream, StreamExt};
use tollgate_proto::v1::sidecar_service_client::SidecarServiceClient;
use tollgate_proto::v1::sidecar_service_server::{SidecarService, SidecarServiceServer};
use tollgate_proto::v1::{
    RegisterRequest, RegisterResponse, SessionDown, SessionUp, UsageBatch, UsageRecord, session_up,
};
use tonic::metadata::MetadataMap;
use tonic::{Request, Response, Status, Streaming};

use super::Authority;

/// Every message the sidecar sent through the relay.
#[derive(Clone, Default)]
pub struct Seen(Arc<Mutex<Vec<SessionUp>>>);

impl Seen {
    fn push(&self, m: SessionUp) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).push(m);
    }

    /// The messages so far.
    pub fn all(&self) -> Vec<session_up::Msg> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter_map(|m| m.msg.clone())
            .collect()
    }

    /// Every usage batch so far (replays included).
    pub fn batches(&self) -> Vec<UsageBatch> {
        self.all()
            .into_iter()
            .filter_map(|m| match m {
                session_up::Msg::Batch(b) => Some(b),
                _ => None,
            })
            .collect()
    }

    /// Every record with its strings resolved through its batch's dictionary.
    pub fn records(&self) -> Vec<Rec> {
        let mut out = Vec::new();
        for b in self.batches() {
            let s = |i: u32| b.string(i).unwrap_or("?").to_string();
            for r in &b.records {
                out.push(Rec {
                    tenant: s(r.tenant),
                    agent: s(r.agent),
                    instance: s(r.agent_instance),
                    model: s(r.model),
                    feature: s(r.feature),
                    task: s(r.task),
                    raw: *r,
                });
            }
        }
        out
    }
}

/// A usage record as the authority receives it, strings resolved.
#[derive(Debug, Clone)]
pub struct Rec {
    pub tenant: String,
    pub agent: String,
    pub instance: String,
    pub model: String,
    pub feature: String,
    pub task: String,
    pub raw: UsageRecord,
}

#[derive(Clone)]
struct Relay {
    upstream: String,
    seen: Seen,
}

fn forward<T>(meta: &MetadataMap, msg: T) -> Request<T> {
    let mut r = Request::new(msg);
    for key in [
        tollgate_proto::AUTHORIZATION,
        tollgate_proto::SIDECAR_ID_HEADER,
    ] {
        if let Some(v) = meta.get(key) {
            r.metadata_mut().insert(key, v.clone());
        }
    }
    r
}

impl Relay {
    async fn client(&self) -> Result<SidecarServiceClient<tonic::transport::Channel>, Status> {
        SidecarServiceClient::connect(self.upstream.clone())
            .await
            .map_err(|e| Status::unavailable(e.to_string()))
    }
}

#[tonic::async_trait]
impl SidecarService for Relay {
    async fn register(
        &self,
        req: Request<RegisterRequest>,
    ) -> Result<Response<RegisterResponse>, Status> {
        let fwd = forward(req.metadata(), req.get_ref().clone());
        self.client().await?.register(fwd).await
    }

    type SessionStream = Pin<Box<dyn Stream<Item = Result<SessionDown, Status>> + Send>>;

    async fn session(
        &self,
        req: Request<Streaming<SessionUp>>,
    ) -> Result<Response<Self::SessionStream>, Status> {
        let meta = req.metadata().clone();
        let mut inbound = req.into_inner();
        let (tx, rx) = tokio::sync::mpsc::channel(256);
        let seen = self.seen.clone();
        tokio::spawn(async move {
            while let Some(Ok(m)) = inbound.next().await {
                seen.push(m.clone());
                if tx.send(m).await.is_err() {
                    break;
                }
            }
        });
        let down = self
            .client()
            .await?
            .session(forward(&meta, ReceiverStream::new(rx)))
            .await?
            .into_inner();
        Ok(Response::new(Box::pin(down)))
    }
}

impl Authority {
    /// Starts a recording relay to this authority; returns its URL (give it to the
    /// sidecar as `authority`) and what it records.
    pub fn relay(&self) -> (String, Seen) {
        let seen = Seen::default();
        let relay = Relay {
            upstream: self.url.clone(),
            seen: seen.clone(),
        };
        let listener = self
            .rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .expect("bind the relay");
        let addr = listener.local_addr().expect("relay address");
        let incoming = tonic::transport::server::TcpIncoming::from(listener);
        self.rt.spawn(
            tonic::transport::Server::builder()
                .add_service(SidecarServiceServer::new(relay))
                .serve_with_incoming(incoming),
        );
        (format!("http://{addr}"), seen)
    }
}

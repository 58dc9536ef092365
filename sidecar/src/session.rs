//! The session with the authority: a thin transport task.
//!
//! It connects, registers, opens the bidirectional `Session` stream and forwards what
//! arrives to the control loop as [`Event`]s; the control loop owns all state and decides
//! what to send. On any failure it reports [`Event::Disconnected`], waits a jittered,
//! growing delay ([`crate::backoff`]) and tries again, until shutdown.

use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;
use tollgate_proto::v1::sidecar_service_client::SidecarServiceClient;
use tollgate_proto::v1::{RegisterRequest, RegisterResponse, SessionDown, SessionUp};
use tonic::metadata::MetadataValue;
use tonic::transport::{Channel, Endpoint};

use crate::backoff::Reconnect;

/// What the transport tells the control loop.
#[derive(Debug)]
pub enum Event {
    /// The transport needs a fresh `RegisterRequest` (held leases, next seq).
    NeedRegister(oneshot::Sender<RegisterRequest>),
    /// Registered and the stream is open; send up through `up`.
    Connected {
        /// The authority's answer to `Register`.
        response: Box<RegisterResponse>,
        /// Messages to the authority.
        up: mpsc::Sender<SessionUp>,
    },
    /// A message from the authority.
    Down(Box<SessionDown>),
    /// The session failed (or could not be opened); `reason` for logs.
    Disconnected {
        /// What went wrong.
        reason: String,
    },
    /// The authority refused `Register` (or the session) for good: `UNAUTHENTICATED` (an
    /// unknown token) or `PERMISSION_DENIED` (a credential that does not cover the
    /// sidecar's tenants). Retrying cannot help until its credential or the authority's
    /// configuration changes (the transport still retries, with backoff). Otherwise handled
    /// as [`Event::Disconnected`].
    Refused {
        /// The gRPC status code.
        code: tonic::Code,
        /// The authority's message.
        message: String,
    },
}

/// Why a session ended.
enum Ended {
    /// A failure worth retrying (network, authority restarting), for logs.
    Failed(String),
    /// A permanent refusal, see [`Event::Refused`].
    Refused(tonic::Code, String),
}

impl From<String> for Ended {
    fn from(s: String) -> Self {
        Ended::Failed(s)
    }
}

/// A status from `Register` or `Session`: a refusal for good, or a failure to retry.
fn ended(what: &str, s: tonic::Status) -> Ended {
    match s.code() {
        tonic::Code::Unauthenticated | tonic::Code::PermissionDenied => {
            Ended::Refused(s.code(), s.message().to_string())
        }
        _ => Ended::Failed(format!("{what}: {}: {}", s.code(), s.message())),
    }
}

/// How to reach the authority.
#[derive(Debug, Clone)]
pub struct Target {
    /// `http://host:port`.
    pub url: String,
    /// This sidecar's id.
    pub sidecar_id: String,
    /// Bearer token, if any.
    pub token: Option<String>,
    /// CA certificate (PEM) for https.
    pub ca_cert: Option<Vec<u8>>,
    /// Connect timeout.
    pub connect_timeout: Duration,
}

fn with_auth<T>(mut req: tonic::Request<T>, target: &Target) -> Result<tonic::Request<T>, String> {
    if let Some(tok) = &target.token {
        let v: MetadataValue<_> = format!("Bearer {tok}")
            .parse()
            .map_err(|_| "the sidecar token has characters not allowed in a header".to_string())?;
        req.metadata_mut().insert(tollgate_proto::AUTHORIZATION, v);
    }
    let id: MetadataValue<_> = target
        .sidecar_id
        .parse()
        .map_err(|_| "the sidecar id has characters not allowed in a header".to_string())?;
    req.metadata_mut()
        .insert(tollgate_proto::SIDECAR_ID_HEADER, id);
    Ok(req)
}

async fn connect(target: &Target) -> Result<SidecarServiceClient<Channel>, String> {
    let mut ep = Endpoint::from_shared(target.url.clone())
        .map_err(|e| format!("bad authority URL {:?}: {e}", target.url))?;
    if let Some(ca) = &target.ca_cert {
        let tls = tonic::transport::ClientTlsConfig::new()
            .ca_certificate(tonic::transport::Certificate::from_pem(ca));
        ep = ep
            .tls_config(tls)
            .map_err(|e| format!("TLS configuration: {e}"))?;
    }
    let ep = ep
        .connect_timeout(target.connect_timeout)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(10))
        .keep_alive_timeout(Duration::from_secs(5));
    let ch = ep
        .connect()
        .await
        .map_err(|e| format!("connect {}: {e}", target.url))?;
    Ok(SidecarServiceClient::new(ch))
}

/// One session: register, stream until it fails. Returns why it ended.
async fn one_session(
    target: &Target,
    events: &mpsc::Sender<Event>,
    shutdown: &mut watch::Receiver<bool>,
) -> Result<String, Ended> {
    let mut client = connect(target).await?;
    let (tx, rx) = oneshot::channel();
    events
        .send(Event::NeedRegister(tx))
        .await
        .map_err(|_| "control loop gone".to_string())?;
    let reg = rx.await.map_err(|_| "control loop gone".to_string())?;
    let response = client
        .register(with_auth(tonic::Request::new(reg), target)?)
        .await
        .map_err(|s| ended("register", s))?
        .into_inner();
    let (up_tx, up_rx) = mpsc::channel::<SessionUp>(1024);
    let req = with_auth(tonic::Request::new(ReceiverStream::new(up_rx)), target)?;
    let mut down = client
        .session(req)
        .await
        .map_err(|s| ended("session", s))?
        .into_inner();
    events
        .send(Event::Connected {
            response: Box::new(response),
            up: up_tx,
        })
        .await
        .map_err(|_| "control loop gone".to_string())?;
    loop {
        tokio::select! {
            _ = shutdown.changed() => return Ok("shutdown".into()),
            msg = down.next() => match msg {
                Some(Ok(m)) => {
                    if events.send(Event::Down(Box::new(m))).await.is_err() {
                        return Ok("control loop gone".into());
                    }
                }
                Some(Err(s)) => return Err(ended("session stream", s)),
                None => return Err("the authority closed the session".to_string().into()),
            }
        }
    }
}

/// Runs sessions until `shutdown` turns true, reconnecting with backoff.
pub async fn run(target: Target, events: mpsc::Sender<Event>, mut shutdown: watch::Receiver<bool>) {
    let mut backoff = Reconnect::default();
    loop {
        if *shutdown.borrow() {
            return;
        }
        let started = tokio::time::Instant::now();
        let event = match one_session(&target, &events, &mut shutdown).await {
            Ok(reason) | Err(Ended::Failed(reason)) => Event::Disconnected { reason },
            Err(Ended::Refused(code, message)) => Event::Refused { code, message },
        };
        if *shutdown.borrow() {
            return;
        }
        if events.send(event).await.is_err() {
            return;
        }
        if started.elapsed() > Duration::from_secs(10) {
            backoff.reset(); // the last session worked for a while: retry quickly
        }
        let delay = backoff.next_delay();
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = shutdown.changed() => return,
        }
    }
}

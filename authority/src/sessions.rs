//! Live sidecar sessions and registrations, and the push path for policy changes.
//!
//! Each session owns a bounded channel of downstream messages; a push is a non-blocking
//! `try_send` into every session serving the tenant (a full channel falls back to a
//! spawned send so one slow sidecar never delays the others). This is what lets a lowered
//! cap reach every connected sidecar within one push.

use std::collections::HashMap;
use std::sync::Mutex;

use tokio::sync::mpsc;
use tollgate_proto::v1::SessionDown;
use tonic::Status;

/// Downstream channel of a session.
pub type DownTx = mpsc::Sender<Result<SessionDown, Status>>;

/// What a sidecar told us in `Register`.
#[derive(Debug, Clone)]
pub struct Registration {
    /// Credential name it authenticated with.
    pub credential: String,
    /// Tenants it serves.
    pub tenants: Vec<String>,
    /// Its batch-signing key.
    pub public_key: ed25519_dalek::VerifyingKey,
}

#[derive(Debug)]
struct Live {
    generation: u64,
    tenants: Vec<String>,
    tx: DownTx,
}

/// Registrations and live sessions, by sidecar id.
#[derive(Debug, Default)]
pub struct Sessions {
    registered: Mutex<HashMap<String, Registration>>,
    live: Mutex<HashMap<String, Live>>,
    generation: Mutex<u64>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding these locks cannot leave the maps inconsistent (each update
    // is a single insert/remove), so recover from poisoning instead of propagating it.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Sessions {
    /// Records a registration (replacing an older one of the same id).
    pub fn register(&self, sidecar: &str, reg: Registration) {
        lock(&self.registered).insert(sidecar.to_string(), reg);
    }

    /// The registration of `sidecar`.
    pub fn registration(&self, sidecar: &str) -> Option<Registration> {
        lock(&self.registered).get(sidecar).cloned()
    }

    /// Installs a live session, replacing (and so closing) an older one. Returns its
    /// generation, to pass to [`Sessions::close`].
    pub fn open(&self, sidecar: &str, tenants: Vec<String>, tx: DownTx) -> u64 {
        let generation = {
            let mut g = lock(&self.generation);
            *g += 1;
            *g
        };
        lock(&self.live).insert(
            sidecar.to_string(),
            Live {
                generation,
                tenants,
                tx,
            },
        );
        generation
    }

    /// Removes the session if it is still generation `generation`.
    pub fn close(&self, sidecar: &str, generation: u64) -> bool {
        let mut live = lock(&self.live);
        if live
            .get(sidecar)
            .is_some_and(|l| l.generation == generation)
        {
            live.remove(sidecar);
            true
        } else {
            false
        }
    }

    /// True if `sidecar` has a live session.
    pub fn is_live(&self, sidecar: &str) -> bool {
        lock(&self.live).contains_key(sidecar)
    }

    /// Number of live sessions.
    pub fn live_count(&self) -> usize {
        lock(&self.live).len()
    }

    /// The downstream channel of `sidecar`, if live.
    pub fn sender(&self, sidecar: &str) -> Option<DownTx> {
        lock(&self.live).get(sidecar).map(|l| l.tx.clone())
    }

    /// Sidecars with a live session serving `tenant`.
    pub fn serving(&self, tenant: &str) -> Vec<(String, DownTx)> {
        lock(&self.live)
            .iter()
            .filter(|(_, l)| l.tenants.iter().any(|t| t == tenant))
            .map(|(id, l)| (id.clone(), l.tx.clone()))
            .collect()
    }

    /// Sends `msg` to every live session serving `tenant`; returns how many were sent to.
    pub fn push(&self, tenant: &str, msg: &SessionDown) -> usize {
        let targets = self.serving(tenant);
        let n = targets.len();
        for (_, tx) in targets {
            send_now(&tx, msg.clone());
        }
        n
    }
}

/// Sends without waiting; if the channel is full, a task finishes the send.
pub fn send_now(tx: &DownTx, msg: SessionDown) {
    match tx.try_send(Ok(msg)) {
        Ok(()) => {}
        Err(mpsc::error::TrySendError::Full(m)) => {
            let tx = tx.clone();
            tokio::spawn(async move {
                let _ = tx.send(m).await;
            });
        }
        Err(mpsc::error::TrySendError::Closed(_)) => {}
    }
}

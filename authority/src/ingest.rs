//! Usage ingest with group commit.
//!
//! **Invariant.** A batch is acknowledged only after the ledger committed it (the ledger's
//! `post_batches` returns after a durable commit); a batch re-sent (same sidecar, same seq)
//! is posted once (the ledger's idempotency by `BatchKey`).
//!
//! Sessions verify and convert their batches concurrently, then hand them to one
//! committer task. The committer takes everything queued (up to a bound) and posts it in
//! one ledger transaction: one durable commit (one fsync) for many batches from many
//! sidecars. While a commit runs, the next group queues up, so the commit rate adapts to
//! the load with no timer.

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};
use tollgate_ledger::{BatchOutcome, Ledger, LedgerError, UsageBatch};

use crate::metrics::Metrics;

/// Most records posted in one transaction (bounds its size and latency).
pub const MAX_GROUP_RECORDS: usize = 200_000;
/// Most batches posted in one transaction.
pub const MAX_GROUP_BATCHES: usize = 256;

/// One batch waiting for its commit.
pub struct Pending {
    /// The batch, converted.
    pub batch: UsageBatch,
    /// Where the outcome goes.
    pub reply: oneshot::Sender<Result<BatchOutcome, LedgerError>>,
}

/// Handle to the committer.
#[derive(Clone, Debug)]
pub struct Ingest {
    tx: mpsc::Sender<Pending>,
}

impl Ingest {
    /// Starts the committer task.
    pub fn start(ledger: Arc<Ledger>, metrics: Arc<Metrics>) -> Ingest {
        let (tx, rx) = mpsc::channel(1024);
        tokio::spawn(committer(ledger, metrics, rx));
        Ingest { tx }
    }

    /// Queues `batch`; its outcome arrives on `reply` after the durable commit. Waits only
    /// for room in the queue. Err: the committer stopped.
    pub async fn submit(
        &self,
        batch: UsageBatch,
        reply: oneshot::Sender<Result<BatchOutcome, LedgerError>>,
    ) -> Result<(), ()> {
        self.tx.send(Pending { batch, reply }).await.map_err(|_| ())
    }

    /// Queues `batch` and waits for its durable commit.
    pub async fn post(&self, batch: UsageBatch) -> Result<BatchOutcome, LedgerError> {
        let (reply, wait) = oneshot::channel();
        self.tx
            .send(Pending { batch, reply })
            .await
            .map_err(|_| LedgerError::Store("the ingest committer stopped".into()))?;
        wait.await
            .map_err(|_| LedgerError::Store("the ingest committer dropped the batch".into()))?
    }
}

async fn committer(ledger: Arc<Ledger>, metrics: Arc<Metrics>, mut rx: mpsc::Receiver<Pending>) {
    while let Some(first) = rx.recv().await {
        let mut records = first.batch.records.len();
        let mut group = vec![first];
        while group.len() < MAX_GROUP_BATCHES && records < MAX_GROUP_RECORDS {
            match rx.try_recv() {
                Ok(p) => {
                    records += p.batch.records.len();
                    group.push(p);
                }
                Err(_) => break,
            }
        }
        let (batches, replies): (Vec<UsageBatch>, Vec<_>) =
            group.into_iter().map(|p| (p.batch, p.reply)).unzip();
        match ledger.post_batches(&batches).await {
            Ok(outcomes) => {
                for (o, reply) in outcomes.into_iter().zip(replies) {
                    if !o.duplicate {
                        metrics.records.inc_by(o.records);
                        let rated: u64 = o.tenants.iter().map(|t| t.rated.micros()).sum();
                        metrics.rated_micro.inc_by(rated);
                    }
                    let _ = reply.send(Ok(o));
                }
            }
            Err(e)
                if batches.len() > 1
                    && matches!(
                        e,
                        LedgerError::InvalidInput(_)
                            | LedgerError::UnknownTenant(_)
                            | LedgerError::BatchConflict { .. }
                    ) =>
            {
                // One bad batch must not sink the others: post them one by one.
                for (b, reply) in batches.into_iter().zip(replies) {
                    let r = ledger.post_batch(&b).await;
                    if let Ok(o) = &r
                        && !o.duplicate
                    {
                        metrics.records.inc_by(o.records);
                    }
                    let _ = reply.send(r);
                }
            }
            Err(e) => {
                for reply in replies {
                    let _ = reply.send(Err(e.clone()));
                }
            }
        }
    }
}

//! Drained usage records → sequence-numbered, signed batches in the outbox.
//!
//! A batch is written to the [`Outbox`] right after its records are drained and before it is
//! sent; each outbox entry also carries the per-lane reconciliation cursors
//! ([`crate::reconcile`]) as they stand once the batch is reported, so a restarted sidecar
//! knows exactly what it has reported. The records' ring space is released only after the
//! outbox write (`Region::peek` then `Region::release`), so a crash in between loses no
//! detail: the restarted sidecar finds the records again and skips the sequences the
//! outbox's cursors already cover.

use prost::Message;
use tollgate_proto::v1::UsageBatch;
use tollgate_proto::{BatchBuilder, batch::RecordInput};

use crate::key::SidecarKey;
use crate::outbox::{Outbox, OutboxError};
use crate::reconcile::Cursor;

/// Most records in one batch (keeps a batch well under gRPC's 4 MiB message limit).
pub const MAX_RECORDS_PER_BATCH: usize = 16_384;

/// Seals batches for one sidecar identity.
#[derive(Debug)]
pub struct Batcher {
    sidecar_id: String,
}

/// Errors turning records into a persisted batch.
#[derive(Debug, thiserror::Error)]
pub enum BatchError {
    /// The outbox could not be written (full tmpfs?): the records stay in the rings.
    #[error(transparent)]
    Outbox(#[from] OutboxError),
    /// A persisted batch does not decode (the outbox file passed its checksum, so this means
    /// an incompatible version wrote it).
    #[error("outbox batch {seq} does not decode: {reason}")]
    Decode {
        /// Its sequence.
        seq: u64,
        /// The decoder's complaint.
        reason: String,
    },
}

impl Batcher {
    /// A batcher signing as `sidecar_id`.
    pub fn new(sidecar_id: impl Into<String>) -> Self {
        Self {
            sidecar_id: sidecar_id.into(),
        }
    }

    /// Builds, signs and persists one batch of `records`, together with the per-lane
    /// reconciliation `cursors` as they stand once this batch is reported (see
    /// [`crate::reconcile`]); returns the batch (ready to send).
    pub fn seal(
        &self,
        outbox: &mut Outbox,
        key: &SidecarKey,
        records: &[RecordInput<'_>],
        cursors: &[(u32, Cursor)],
        now_unix_ms: u64,
    ) -> Result<UsageBatch, BatchError> {
        let mut b = BatchBuilder::new(outbox.next_seq(), now_unix_ms);
        for r in records {
            b.push(r);
        }
        let mut batch = b.finish();
        let msg = tollgate_proto::signing::batch_signing_bytes(&self.sidecar_id, &batch);
        batch.signature = key.sign(&msg).to_vec();
        let seq = outbox.persist(&encode_entry(cursors, &batch))?;
        debug_assert_eq!(seq, batch.seq);
        Ok(batch)
    }

    /// Decodes a persisted entry for replay: the ring cursors it covers and the batch.
    pub fn decode(
        seq: u64,
        payload: &[u8],
    ) -> Result<(Vec<(u32, Cursor)>, UsageBatch), BatchError> {
        let bad = |reason: &str| BatchError::Decode {
            seq,
            reason: reason.to_string(),
        };
        let n = payload
            .get(..4)
            .and_then(|b| b.try_into().ok())
            .map(u32::from_le_bytes)
            .ok_or_else(|| bad("short entry"))? as usize;
        let body = 4usize
            .checked_add(
                n.checked_mul(CURSOR_BYTES)
                    .ok_or_else(|| bad("cursor count"))?,
            )
            .filter(|end| *end <= payload.len())
            .ok_or_else(|| bad("cursor count past the end"))?;
        let cursors = payload[4..body]
            .chunks_exact(CURSOR_BYTES)
            .map(|c| {
                let lane = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
                let w = |i: usize| {
                    let mut t = [0u8; 8];
                    t.copy_from_slice(&c[4 + 8 * i..12 + 8 * i]);
                    u64::from_le_bytes(t)
                };
                (
                    lane,
                    Cursor {
                        reported: w(0),
                        lost_seen: w(1),
                        next_seq: w(2),
                    },
                )
            })
            .collect();
        let batch = UsageBatch::decode(&payload[body..]).map_err(|e| bad(&e.to_string()))?;
        Ok((cursors, batch))
    }
}

/// Bytes of one encoded cursor: lane (u32) and three u64 fields.
const CURSOR_BYTES: usize = 4 + 3 * 8;

fn encode_entry(cursors: &[(u32, Cursor)], batch: &UsageBatch) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 + cursors.len() * CURSOR_BYTES + batch.encoded_len());
    out.extend_from_slice(&(cursors.len() as u32).to_le_bytes());
    for (lane, c) in cursors {
        out.extend_from_slice(&lane.to_le_bytes());
        for v in [c.reported, c.lost_seen, c.next_seq] {
            out.extend_from_slice(&v.to_le_bytes());
        }
    }
    // Encoding into a Vec cannot run out of room.
    let _ = batch.encode(&mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use tollgate_proto::v1::Tier;

    #[test]
    fn sealed_batches_are_signed_numbered_and_replayable() {
        let dir = tempfile::tempdir().unwrap();
        let (mut ob, _) = Outbox::open(dir.path()).unwrap();
        let key = SidecarKey::generate().unwrap();
        let b = Batcher::new("pod-a");
        let recs = [RecordInput {
            tenant: "acme",
            model: "gpt-4o",
            tier: Some(Tier::Interactive),
            input_tokens: 10,
            output_tokens: 5,
            client_rated_micro: 1234,
            calls: 1,
            ..Default::default()
        }];
        let c = Cursor {
            reported: 17,
            lost_seen: 1,
            next_seq: 5,
        };
        let one = b
            .seal(&mut ob, &key, &recs, &[(3, c), (9, Cursor::default())], 1)
            .unwrap();
        let two = b.seal(&mut ob, &key, &recs, &[], 2).unwrap();
        assert_eq!((one.seq, two.seq), (1, 2));
        let sig: [u8; 64] = one.signature.as_slice().try_into().unwrap();
        let msg = tollgate_proto::signing::batch_signing_bytes("pod-a", &one);
        assert!(crate::key::verify(&key.public_bytes(), &msg, &sig));
        drop(ob);
        let (_, rec) = Outbox::open(dir.path()).unwrap();
        assert_eq!(rec.pending.len(), 2);
        let (cursors, back) = Batcher::decode(rec.pending[0].seq, &rec.pending[0].payload).unwrap();
        assert_eq!(back, one);
        assert_eq!(cursors, vec![(3, c), (9, Cursor::default())]);
        assert!(Batcher::decode(9, b"\xff\xff\xff").is_err());
        assert!(Batcher::decode(9, b"\xff\xff\xff\xff\x00").is_err());
    }
}

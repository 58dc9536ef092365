//! Drained usage records → sequence-numbered, signed batches in the outbox.
//!
//! The order of effects is what makes restarts exact: records are read from the rings, the
//! signed batch is written to the [`Outbox`], and only then are the rings' read positions
//! advanced (by the caller, after [`Batcher::seal`] returns). A crash before the outbox
//! write re-reads the same records; a crash after it finds them in the outbox and the ring
//! position is advanced past them on restart (the batch names the ring positions it covers:
//! see [`crate::owner`]).

use prost::Message;
use tollgate_proto::v1::UsageBatch;
use tollgate_proto::{BatchBuilder, batch::RecordInput};

use crate::key::SidecarKey;
use crate::outbox::{Outbox, OutboxError};

/// Most records in one batch (keeps a batch well under gRPC's 4 MiB message limit).
pub const MAX_RECORDS_PER_BATCH: usize = 4_096;

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

    /// Builds, signs and persists one batch of `records`, together with the ring `cursors`
    /// (lane, read position after these records) it covers; returns the batch (ready to send).
    pub fn seal(
        &self,
        outbox: &mut Outbox,
        key: &SidecarKey,
        records: &[RecordInput<'_>],
        cursors: &[(u32, u64)],
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
    pub fn decode(seq: u64, payload: &[u8]) -> Result<(Vec<(u32, u64)>, UsageBatch), BatchError> {
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
            .checked_add(n.checked_mul(12).ok_or_else(|| bad("cursor count"))?)
            .filter(|end| *end <= payload.len())
            .ok_or_else(|| bad("cursor count past the end"))?;
        let cursors = payload[4..body]
            .chunks_exact(12)
            .map(|c| {
                let lane = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
                let mut t = [0u8; 8];
                t.copy_from_slice(&c[4..12]);
                (lane, u64::from_le_bytes(t))
            })
            .collect();
        let batch = UsageBatch::decode(&payload[body..]).map_err(|e| bad(&e.to_string()))?;
        Ok((cursors, batch))
    }
}

fn encode_entry(cursors: &[(u32, u64)], batch: &UsageBatch) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 + cursors.len() * 12 + batch.encoded_len());
    out.extend_from_slice(&(cursors.len() as u32).to_le_bytes());
    for (lane, tail) in cursors {
        out.extend_from_slice(&lane.to_le_bytes());
        out.extend_from_slice(&tail.to_le_bytes());
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
        let one = b.seal(&mut ob, &key, &recs, &[(3, 17), (9, 2)], 1).unwrap();
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
        assert_eq!(cursors, vec![(3, 17), (9, 2)]);
        assert!(Batcher::decode(9, b"\xff\xff\xff").is_err());
        assert!(Batcher::decode(9, b"\xff\xff\xff\xff\x00").is_err());
    }
}

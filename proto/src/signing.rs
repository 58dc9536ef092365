//! What a sidecar signs for a usage batch, and how the authority checks it.
//!
//! The sidecar's ed25519 signature covers [`batch_signing_bytes`]: the tag
//! [`SIGNATURE_DOMAIN`] followed by [`batch_digest`], the SHA-256 of the batch's canonical
//! encoding ([`canonical_batch_bytes`]). Signing a 32-byte digest instead of the whole
//! encoding means one hash pass over the batch on each side (SHA-256, hardware-accelerated
//! on most CPUs) instead of ed25519's SHA-512 passes over every record, and the authority
//! stores the same digest in the ledger for non-repudiation.
//!
//! The canonical encoding does not depend on protobuf's wire encoding (which is not
//! canonical): fixed field order, little-endian integers, strings as `u32` length + bytes.
//! Layout: the domain tag [`BATCH_DOMAIN`], then `sidecar_id`, `seq` (u64), `created_unix_ms`
//! (u64), the dictionary (u32 count, then strings), the records (u32 count, then per record:
//! tenant, agent_instance, model, feature (u32 each), tier, initiator (i32 each),
//! input_tokens, output_tokens, price_book_version, client_rated_micro (u64 each), calls
//! (u32), aggregate (u8), at_unix_ms (u64), task (u32), outcomes (u64), agent (u32),
//! work_units (u32), pre_rated (u8)). The signature field itself is not covered.

use sha2::{Digest, Sha256};

use crate::v1::UsageBatch;

/// First bytes of the canonical encoding.
pub const BATCH_DOMAIN: &[u8] = b"tollgate.v1.UsageBatch/2\n";

/// Domain separation tag of the signed message: a signature over a batch digest can
/// never be replayed as a signature over anything else.
pub const SIGNATURE_DOMAIN: &[u8] = b"tollgate.v1.UsageBatch.sig/1 sha256:";

/// The bytes the sidecar signs with ed25519 (and the authority verifies) for `batch` sent
/// by `sidecar_id`: [`SIGNATURE_DOMAIN`] followed by [`batch_digest`].
pub fn batch_signing_bytes(sidecar_id: &str, batch: &UsageBatch) -> Vec<u8> {
    signing_bytes_from_digest(&batch_digest(sidecar_id, batch))
}

/// The signed message for a digest already computed (the authority computes it once).
pub fn signing_bytes_from_digest(digest: &[u8; 32]) -> Vec<u8> {
    let mut m = Vec::with_capacity(SIGNATURE_DOMAIN.len() + 32);
    m.extend_from_slice(SIGNATURE_DOMAIN);
    m.extend_from_slice(digest);
    m
}

/// SHA-256 of [`canonical_batch_bytes`], computed without building the whole encoding
/// (each record is encoded into a small buffer and fed to the hash).
pub fn batch_digest(sidecar_id: &str, batch: &UsageBatch) -> [u8; 32] {
    let mut h = Sha256::new();
    encode(sidecar_id, batch, &mut |b: &[u8]| h.update(b));
    h.finalize().into()
}

/// The canonical encoding of `batch` sent by `sidecar_id` (see the module docs).
pub fn canonical_batch_bytes(sidecar_id: &str, batch: &UsageBatch) -> Vec<u8> {
    let dict_len: usize = batch.dictionary.iter().map(|s| s.len() + 4).sum();
    let mut out = Vec::with_capacity(BATCH_DOMAIN.len() + 64 + dict_len + batch.records.len() * 77);
    encode(sidecar_id, batch, &mut |b: &[u8]| out.extend_from_slice(b));
    out
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u32).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

/// Writes the canonical encoding to `sink` in pieces (the header, each dictionary entry,
/// each record).
fn encode(sidecar_id: &str, batch: &UsageBatch, sink: &mut dyn FnMut(&[u8])) {
    let mut buf: Vec<u8> = Vec::with_capacity(256);
    buf.extend_from_slice(BATCH_DOMAIN);
    put_str(&mut buf, sidecar_id);
    buf.extend_from_slice(&batch.seq.to_le_bytes());
    buf.extend_from_slice(&batch.created_unix_ms.to_le_bytes());
    buf.extend_from_slice(&(batch.dictionary.len() as u32).to_le_bytes());
    sink(&buf);
    for s in &batch.dictionary {
        buf.clear();
        put_str(&mut buf, s);
        sink(&buf);
    }
    sink(&(batch.records.len() as u32).to_le_bytes());
    for r in &batch.records {
        buf.clear();
        for v in [r.tenant, r.agent_instance, r.model, r.feature] {
            buf.extend_from_slice(&v.to_le_bytes());
        }
        buf.extend_from_slice(&r.tier.to_le_bytes());
        buf.extend_from_slice(&r.initiator.to_le_bytes());
        for v in [
            r.input_tokens,
            r.output_tokens,
            r.price_book_version,
            r.client_rated_micro,
        ] {
            buf.extend_from_slice(&v.to_le_bytes());
        }
        buf.extend_from_slice(&r.calls.to_le_bytes());
        buf.push(u8::from(r.aggregate));
        buf.extend_from_slice(&r.at_unix_ms.to_le_bytes());
        buf.extend_from_slice(&r.task.to_le_bytes());
        buf.extend_from_slice(&r.outcomes.to_le_bytes());
        buf.extend_from_slice(&r.agent.to_le_bytes());
        buf.extend_from_slice(&r.work_units.to_le_bytes());
        buf.push(u8::from(r.pre_rated));
        sink(&buf);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::{BatchBuilder, RecordInput};

    #[test]
    fn encoding_covers_every_field_and_the_sidecar() {
        let mut b = BatchBuilder::new(3, 10);
        b.push(&RecordInput {
            tenant: "acme",
            input_tokens: 5,
            outcomes: 1,
            ..Default::default()
        });
        let batch = b.finish();
        let base = batch_signing_bytes("sc-1", &batch);
        assert!(base.starts_with(SIGNATURE_DOMAIN));
        assert_eq!(base.len(), SIGNATURE_DOMAIN.len() + 32);
        assert!(canonical_batch_bytes("sc-1", &batch).starts_with(BATCH_DOMAIN));
        assert_eq!(
            base,
            signing_bytes_from_digest(&batch_digest("sc-1", &batch))
        );
        // The streamed digest is the digest of the full encoding.
        let full: [u8; 32] = Sha256::digest(canonical_batch_bytes("sc-1", &batch)).into();
        assert_eq!(full, batch_digest("sc-1", &batch));
        assert_ne!(base, batch_signing_bytes("sc-2", &batch));
        let mut changed = batch.clone();
        changed.records[0].input_tokens = 6;
        assert_ne!(base, batch_signing_bytes("sc-1", &changed));
        let mut changed = batch.clone();
        changed.records[0].outcomes = 2;
        assert_ne!(base, batch_signing_bytes("sc-1", &changed));
        let mut changed = batch.clone();
        changed.records[0].agent = 1;
        assert_ne!(base, batch_signing_bytes("sc-1", &changed));
        let mut changed = batch.clone();
        changed.records[0].work_units = 1;
        assert_ne!(base, batch_signing_bytes("sc-1", &changed));
        let mut changed = batch.clone();
        changed.records[0].pre_rated = true;
        assert_ne!(base, batch_signing_bytes("sc-1", &changed));
        let mut changed = batch.clone();
        changed.seq = 4;
        assert_ne!(base, batch_signing_bytes("sc-1", &changed));
        // The signature is not covered.
        let mut signed = batch;
        signed.signature = vec![1; 64];
        assert_eq!(base, batch_signing_bytes("sc-1", &signed));
    }
}

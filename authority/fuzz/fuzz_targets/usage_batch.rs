//! A usage batch as it arrives on a sidecar session: protobuf bytes decoded into
//! `UsageBatch`, then `sidecar_svc::prepare_batch`, the authority's own signature check and
//! wire-to-ledger conversion, run twice:
//! - as sent: the signature in the bytes (almost always wrong) must be refused, never panic;
//! - re-signed with the registered key, so the fuzzer reaches the conversion behind the
//!   signature (dictionary indices, tenant scope, tier, initiator).
//!
//! What must hold: a batch prepared under one seq or sidecar id never verifies under
//! another (the signature binds them), and the digest ignores the protobuf encoding (a
//! re-encoded batch has the same digest).
#![no_main]

use ed25519_dalek::{Signer, SigningKey};
use libfuzzer_sys::fuzz_target;
use prost::Message;
use tollgate_authority::sessions::Registration;
use tollgate_authority::sidecar_svc::prepare_batch;
use tollgate_proto::signing::{batch_digest, batch_signing_bytes};
use tollgate_proto::v1::UsageBatch;

const SIDECAR: &str = "sc-fuzz";

fn key() -> &'static SigningKey {
    static KEY: std::sync::OnceLock<SigningKey> = std::sync::OnceLock::new();
    KEY.get_or_init(|| SigningKey::from_bytes(&[7u8; 32]))
}

fn registration() -> Registration {
    Registration {
        credential: "fuzz".into(),
        tenants: vec!["acme".into(), "beta".into()],
        public_key: key().verifying_key(),
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(batch) = UsageBatch::decode(data) else {
        return;
    };
    let reg = registration();

    // The digest is of the canonical encoding, not of the bytes that came in.
    let again = UsageBatch::decode(batch.encode_to_vec().as_slice()).expect("re-decodes");
    assert_eq!(batch_digest(SIDECAR, &batch), batch_digest(SIDECAR, &again));

    let as_sent = prepare_batch(SIDECAR, &reg, batch.clone());
    if let Ok(prepared) = &as_sent {
        // Only a signature by the registered key can pass: the input carried one.
        let sig = batch.signature.as_slice();
        let expected = key().sign(&batch_signing_bytes(SIDECAR, &batch)).to_bytes();
        assert_eq!(sig, expected.as_slice(), "a foreign signature verified");
        assert_eq!(prepared.records.len(), batch.records.len());
    }

    let mut signed = batch;
    signed.signature = key()
        .sign(&batch_signing_bytes(SIDECAR, &signed))
        .to_bytes()
        .to_vec();
    match prepare_batch(SIDECAR, &reg, signed.clone()) {
        Ok(prepared) => {
            assert_eq!(prepared.records.len(), signed.records.len());
            assert_eq!(prepared.key.seq, signed.seq);
            for r in &prepared.records {
                assert!(reg.tenants.iter().any(|t| t == r.tenant.as_str()));
                assert!(r.calls >= 1);
            }
            // The signature binds the sidecar id and the seq.
            assert!(prepare_batch("sc-other", &reg, signed.clone()).is_err());
            let mut moved = signed;
            moved.seq = moved.seq.wrapping_add(1).max(1);
            assert!(prepare_batch(SIDECAR, &reg, moved).is_err());
        }
        Err(e) => assert!(!e.is_empty(), "a rejection says why"),
    }
});

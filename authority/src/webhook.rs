//! Alert delivery: ledger alert events become HTTP POSTs of JSON to the rule's webhook URL,
//! signed with HMAC-SHA256 over the exact body (header
//! `X-Tollgate-Signature: sha256=<hex>`), keyed with the rule's own webhook secret if it
//! has one, else the authority's global `webhook_secret`.
//!
//! Deliveries are **durable**: an alert that fires is queued in the store
//! (`tollgate_authority_webhooks`) before any attempt, and a loop in every replica claims
//! due ones, POSTs them, and deletes them once delivered. A failed attempt (connection
//! error, 429, 5xx) is retried after [`retry_delay`] (1 s doubling up to 5 min, with
//! jitter), at most [`MAX_ATTEMPTS`] times (about 40 minutes in all); a restart or a
//! replica's death in between loses nothing, it only delays. A 4xx other than 429 is
//! final: the receiver said the request itself is wrong. Delivery is at least once:
//! `X-Tollgate-Delivery` is a unique id to de-duplicate.
//!
//! Receivers verify by recomputing `hex(HMAC-SHA256(secret, body))` and comparing in
//! constant time.

use std::sync::Arc;
use std::time::Duration;

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use crate::metrics::Metrics;
use crate::policy_store::{PendingWebhook, PolicyStore};

/// Header carrying the signature.
pub const SIGNATURE_HEADER: &str = "x-tollgate-signature";
/// Header carrying the delivery id.
pub const DELIVERY_HEADER: &str = "x-tollgate-delivery";

/// `sha256=<hex>` of HMAC-SHA256(`secret`, `body`).
pub fn sign(secret: &[u8], body: &[u8]) -> String {
    // HMAC accepts keys of any length; new_from_slice cannot fail for it.
    let mut mac =
        <Hmac<Sha256> as KeyInit>::new_from_slice(secret).unwrap_or_else(|_| unreachable_hmac());
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

#[cold]
fn unreachable_hmac() -> Hmac<Sha256> {
    // HMAC's KeyInit accepts every key length; this is never reached. Use an empty key
    // rather than panic so a library change cannot crash the authority.
    <Hmac<Sha256> as KeyInit>::new(&Default::default())
}

/// Why one delivery attempt failed.
#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    /// Network or protocol error: retried.
    #[error("webhook request failed: {0}")]
    Transport(String),
    /// The receiver answered with this status.
    #[error("webhook answered HTTP {0}")]
    Status(u16),
    /// Neither the rule nor the authority has a webhook secret: it cannot be signed.
    #[error("no webhook secret to sign with (set the rule's or the authority's)")]
    NoSecret,
}

/// Attempts before a delivery is given up (counted `failed` and logged).
pub const MAX_ATTEMPTS: u32 = 16;

/// Wait before attempt `attempts + 1` after `attempts` failures: 1 s doubling, at most
/// 5 min, plus up to a quarter more as jitter (`jitter_permille` of that quarter, from
/// the caller, so the schedule is testable).
pub fn retry_delay(attempts: u32, jitter_permille: u64) -> Duration {
    let base_ms = 1_000u64
        .saturating_mul(1u64 << attempts.min(20))
        .min(300_000);
    let jitter = base_ms / 4 * jitter_permille.min(1000) / 1000;
    Duration::from_millis(base_ms + jitter)
}

impl DeliveryError {
    /// True if another attempt may succeed (connection errors, 429, 5xx).
    pub fn retryable(&self) -> bool {
        match self {
            DeliveryError::Transport(_) => true,
            DeliveryError::Status(s) => *s == 429 || *s >= 500,
            DeliveryError::NoSecret => false,
        }
    }
}

/// Sends signed webhooks, one attempt at a time (the retry schedule is the caller's,
/// kept in the store).
#[derive(Clone)]
pub struct WebhookSender {
    client: reqwest::Client,
    /// The authority's global key (rules may carry their own).
    secret: Option<Arc<Vec<u8>>>,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for WebhookSender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookSender").finish_non_exhaustive()
    }
}

impl WebhookSender {
    /// A sender signing with a rule's own secret, or else the global `secret`.
    pub fn new(
        secret: Option<&[u8]>,
        metrics: Arc<Metrics>,
    ) -> Result<WebhookSender, DeliveryError> {
        // reqwest is built without a bundled crypto provider; use ring (already in the tree
        // for TLS). Installing twice is harmless.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| DeliveryError::Transport(e.to_string()))?;
        Ok(WebhookSender {
            client,
            secret: secret.map(|s| Arc::new(s.to_vec())),
            metrics,
        })
    }

    /// True if a delivery with `rule_secret` (empty: none) can be signed.
    pub fn can_sign(&self, rule_secret: &[u8]) -> bool {
        !rule_secret.is_empty() || self.secret.is_some()
    }

    /// One POST of `body` to `url`, signed with `rule_secret` (empty: the global one).
    pub async fn attempt(
        &self,
        url: &str,
        body: &[u8],
        delivery: &str,
        rule_secret: &[u8],
    ) -> Result<(), DeliveryError> {
        let key: &[u8] = match (&self.secret, rule_secret.is_empty()) {
            (_, false) => rule_secret,
            (Some(global), true) => global,
            (None, true) => return Err(DeliveryError::NoSecret),
        };
        let resp = self
            .client
            .post(url)
            .header("content-type", "application/json")
            .header(SIGNATURE_HEADER, sign(key, body))
            .header(DELIVERY_HEADER, delivery)
            .body(body.to_vec())
            .send()
            .await
            .map_err(|e| DeliveryError::Transport(e.to_string()))?;
        let status = resp.status().as_u16();
        if (200..300).contains(&status) {
            Ok(())
        } else {
            Err(DeliveryError::Status(status))
        }
    }

    /// One attempt at a queued delivery, with its outcome recorded in the store: deleted
    /// when delivered or given up, rescheduled otherwise.
    pub async fn attempt_queued(&self, store: &PolicyStore, w: PendingWebhook, now_ms: u64) {
        let res = self.attempt(&w.url, &w.body, &w.delivery, &w.secret).await;
        let attempts = w.attempts.saturating_add(1);
        let outcome = match &res {
            Ok(()) => {
                Metrics::count(&self.metrics.webhooks, "ok");
                store.webhook_done(&w.delivery).await
            }
            Err(e) if e.retryable() && attempts < MAX_ATTEMPTS => {
                Metrics::count(&self.metrics.webhooks, "retry");
                let jitter = fastrand::u64(0..=1000);
                let delay = retry_delay(w.attempts, jitter);
                tracing::debug!(error = %e, delivery = w.delivery, attempts, delay_ms = delay.as_millis() as u64, "webhook retry");
                store
                    .webhook_retry_at(&w.delivery, attempts, now_ms + delay.as_millis() as u64)
                    .await
            }
            Err(e) => {
                Metrics::count(&self.metrics.webhooks, "failed");
                tracing::warn!(error = %e, url = w.url, delivery = w.delivery, attempts, "webhook delivery failed; giving up");
                store.webhook_done(&w.delivery).await
            }
        };
        if let Err(e) = outcome {
            // The row stays claimed until its claim runs out, then is tried again.
            tracing::warn!(error = %e, delivery = w.delivery, "recording a webhook attempt failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_back_off_to_five_minutes_with_bounded_jitter() {
        assert_eq!(retry_delay(0, 0), Duration::from_secs(1));
        assert_eq!(retry_delay(3, 0), Duration::from_secs(8));
        assert_eq!(retry_delay(3, 1000), Duration::from_secs(10));
        assert_eq!(retry_delay(30, 0), Duration::from_secs(300));
        assert_eq!(retry_delay(30, 5000), Duration::from_secs(375));
        let total: Duration = (0..MAX_ATTEMPTS - 1).map(|a| retry_delay(a, 0)).sum();
        assert!(total > Duration::from_secs(30 * 60) && total < Duration::from_secs(60 * 60));
    }

    #[test]
    fn signature_is_hmac_sha256_hex() {
        // RFC 4231 test case 2.
        let s = sign(b"Jefe", b"what do ya want for nothing?");
        assert_eq!(
            s,
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}

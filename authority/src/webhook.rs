//! Alert delivery: ledger alert events become HTTP POSTs of JSON to the rule's webhook URL,
//! signed with HMAC-SHA256 over the exact body (header
//! `X-Tollgate-Signature: sha256=<hex>`), retried with exponential backoff and jitter
//! (200 ms doubling up to 10 s, at most 6 retries) on connection errors, 429 and 5xx. A
//! 4xx other than 429 is final: the receiver said the request itself is wrong.
//!
//! Receivers verify by recomputing `hex(HMAC-SHA256(secret, body))` and comparing in
//! constant time; `X-Tollgate-Delivery` is a unique id to de-duplicate retries.

use std::sync::Arc;
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use crate::metrics::Metrics;

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
}

impl DeliveryError {
    fn retryable(&self) -> bool {
        match self {
            DeliveryError::Transport(_) => true,
            DeliveryError::Status(s) => *s == 429 || *s >= 500,
        }
    }
}

/// Sends signed webhooks with retries.
#[derive(Clone)]
pub struct WebhookSender {
    client: reqwest::Client,
    secret: Arc<Vec<u8>>,
    metrics: Arc<Metrics>,
    backoff: ExponentialBuilder,
}

impl std::fmt::Debug for WebhookSender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookSender").finish_non_exhaustive()
    }
}

impl WebhookSender {
    /// A sender signing with `secret`.
    pub fn new(secret: &[u8], metrics: Arc<Metrics>) -> Result<WebhookSender, DeliveryError> {
        // reqwest is built without a bundled crypto provider; use ring (already in the tree
        // for TLS). Installing twice is harmless.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| DeliveryError::Transport(e.to_string()))?;
        Ok(WebhookSender {
            client,
            secret: Arc::new(secret.to_vec()),
            metrics,
            backoff: ExponentialBuilder::default()
                .with_jitter()
                .with_min_delay(Duration::from_millis(200))
                .with_max_delay(Duration::from_secs(10))
                .with_max_times(6),
        })
    }

    /// Faster retries (tests).
    pub fn with_backoff(mut self, min: Duration, max: Duration, times: usize) -> Self {
        self.backoff = ExponentialBuilder::default()
            .with_jitter()
            .with_min_delay(min)
            .with_max_delay(max)
            .with_max_times(times);
        self
    }

    async fn attempt(&self, url: &str, body: &[u8], delivery: &str) -> Result<(), DeliveryError> {
        let resp = self
            .client
            .post(url)
            .header("content-type", "application/json")
            .header(SIGNATURE_HEADER, sign(&self.secret, body))
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

    /// Delivers `body` to `url`, retrying; returns the last error if it never succeeded.
    pub async fn deliver(
        &self,
        url: &str,
        body: Vec<u8>,
        delivery: &str,
    ) -> Result<(), DeliveryError> {
        let res = (|| self.attempt(url, &body, delivery))
            .retry(self.backoff)
            .when(DeliveryError::retryable)
            .notify(|e, d| {
                Metrics::count(&self.metrics.webhooks, "retry");
                tracing::debug!(error = %e, delay_ms = d.as_millis() as u64, "webhook retry");
            })
            .await;
        match &res {
            Ok(()) => Metrics::count(&self.metrics.webhooks, "ok"),
            Err(e) => {
                Metrics::count(&self.metrics.webhooks, "failed");
                tracing::warn!(error = %e, url, "webhook delivery failed");
            }
        }
        res
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

//! Alert delivery: ledger alert events become HTTP POSTs of JSON to the rule's webhook URL,
//! signed with HMAC-SHA256, keyed with the rule's own webhook secret if it has one, else
//! the authority's global `webhook_secret`.
//!
//! # Signature
//!
//! Each attempt carries two headers:
//!
//! - `X-Tollgate-Delivery: <id>`: unique per alert event, the same on every retry; use it
//!   to de-duplicate (delivery is at least once). Ids are `[A-Za-z0-9._:-]` only.
//! - `X-Tollgate-Signature: t=<unix seconds>,v1=<hex>`: `t` is when this attempt was sent,
//!   `v1` is `hex(HMAC-SHA256(secret, "{t}.{delivery_id}.{body}"))` over the exact body
//!   bytes. The timestamp and the id are signed, so neither a replayed old delivery nor
//!   a swapped id passes.
//!
//! Receivers call [`verify`] (or do the same by hand): recompute the HMAC, compare in
//! constant time, and refuse a `t` more than [`SIGNATURE_TOLERANCE_SECS`] (300 s) from
//! their clock. Unknown `k=v` entries in the header are ignored (room for a later
//! scheme); several `v1` entries are accepted if any one matches.
//!
//! ```
//! use tollgate_authority::webhook::{sign, verify, VerifyError};
//! let header = sign(b"whsec", 1_700_000_000, "acme-half-7", br#"{"tenant":"acme"}"#);
//! assert_eq!(verify(b"whsec", &header, "acme-half-7", br#"{"tenant":"acme"}"#, 1_700_000_060), Ok(()));
//! // The same delivery replayed an hour later:
//! assert!(matches!(
//!     verify(b"whsec", &header, "acme-half-7", br#"{"tenant":"acme"}"#, 1_700_003_600),
//!     Err(VerifyError::Stale { .. })
//! ));
//! ```
//!
//! # Targets
//!
//! The authority sits inside the cluster, so a webhook URL is a way to make it send
//! requests: unless the config sets `webhook_allow_private_targets = true`, targets in
//! private, loopback, link-local (cloud metadata at 169.254.169.254), CGNAT, unspecified,
//! multicast, IPv6 ULA / link-local / loopback space, or IPv4-mapped forms of those
//! ([`forbidden_ip`]) are refused: at `SetAlertRule` when the URL's host is a literal
//! address ([`check_target`]), and at every attempt after DNS resolution, connecting only
//! to the addresses that were checked (a DNS answer that changes between check and
//! connect cannot swap in another). Redirects are not followed: a 3xx is a failed attempt.
//! No HTTP proxy from the environment is used (it would resolve the host itself).
//!
//! # Durability
//!
//! Deliveries are **durable**: an alert that fires is queued in the store
//! (`tollgate_authority_webhooks`) before any attempt, and a loop in every replica claims
//! due ones, POSTs them, and deletes them once delivered. A failed attempt (connection
//! error, 3xx, 429, 5xx) is retried after [`retry_delay`] (1 s doubling up to 5 min, with
//! jitter), at most [`MAX_ATTEMPTS`] times (about 40 minutes in all); a restart or a
//! replica's death in between loses nothing, it only delays. A 4xx other than 429 is
//! final: the receiver said the request itself is wrong. So is a refused target.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use crate::metrics::Metrics;
use crate::policy_store::{PendingWebhook, PolicyStore};

/// Header carrying the signature (`t=<unix seconds>,v1=<hex>`).
pub const SIGNATURE_HEADER: &str = "x-tollgate-signature";
/// Header carrying the delivery id.
pub const DELIVERY_HEADER: &str = "x-tollgate-delivery";
/// How far a signature's timestamp may be from the receiver's clock, seconds.
pub const SIGNATURE_TOLERANCE_SECS: u64 = 300;

fn mac(secret: &[u8], timestamp: u64, delivery_id: &str, body: &[u8]) -> Hmac<Sha256> {
    // HMAC accepts keys of any length; new_from_slice cannot fail for it.
    let mut mac =
        <Hmac<Sha256> as KeyInit>::new_from_slice(secret).unwrap_or_else(|_| unreachable_hmac());
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(delivery_id.as_bytes());
    mac.update(b".");
    mac.update(body);
    mac
}

/// The `X-Tollgate-Signature` value for one attempt sent at `timestamp` (unix seconds):
/// `t=<timestamp>,v1=<hex HMAC-SHA256(secret, "{timestamp}.{delivery_id}.{body}")>`.
pub fn sign(secret: &[u8], timestamp: u64, delivery_id: &str, body: &[u8]) -> String {
    let tag = mac(secret, timestamp, delivery_id, body)
        .finalize()
        .into_bytes();
    format!("t={timestamp},v1={}", hex::encode(tag))
}

#[cold]
fn unreachable_hmac() -> Hmac<Sha256> {
    // HMAC's KeyInit accepts every key length; this is never reached. Use an empty key
    // rather than panic so a library change cannot crash the authority.
    <Hmac<Sha256> as KeyInit>::new(&Default::default())
}

/// Why [`verify`] refused a delivery.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// The header or the delivery id is not in the documented form.
    #[error("webhook signature header is malformed: {0}")]
    Malformed(&'static str),
    /// No `v1` signature matches the secret, timestamp, delivery id and body.
    #[error("webhook signature does not match")]
    Mismatch,
    /// Authentic, but signed too long before (or after) `now`: a replay, or a clock off.
    #[error("webhook signed at {timestamp}, more than {tolerance_secs} s from now ({now})")]
    Stale {
        /// The signed `t`.
        timestamp: u64,
        /// The receiver's clock.
        now: u64,
        /// [`SIGNATURE_TOLERANCE_SECS`].
        tolerance_secs: u64,
    },
}

/// Checks a delivery as a receiver got it: the `X-Tollgate-Signature` header, the
/// `X-Tollgate-Delivery` id, the exact body bytes, and the receiver's clock `now` (unix
/// seconds). Ok only if a `v1` signature matches (compared in constant time) and its
/// timestamp is within [`SIGNATURE_TOLERANCE_SECS`] of `now`.
pub fn verify(
    secret: &[u8],
    header: &str,
    delivery_id: &str,
    body: &[u8],
    now: u64,
) -> Result<(), VerifyError> {
    // The signed text is "{t}.{id}.{body}": with ids limited to these characters and
    // bodies JSON objects, no other split of the same bytes passes.
    let id_ok = !delivery_id.is_empty()
        && delivery_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b':'));
    if !id_ok {
        return Err(VerifyError::Malformed(
            "delivery id must be 1 or more of A-Z a-z 0-9 . _ - :",
        ));
    }
    let mut timestamp = None;
    let mut tags = Vec::new();
    for part in header.split(',') {
        let Some((k, v)) = part.trim().split_once('=') else {
            return Err(VerifyError::Malformed("entries must be key=value"));
        };
        match k {
            "t" => {
                let t = v
                    .parse::<u64>()
                    .map_err(|_| VerifyError::Malformed("t is not unix seconds"))?;
                if timestamp.replace(t).is_some() {
                    return Err(VerifyError::Malformed("more than one t"));
                }
            }
            "v1" => tags.push(v),
            _ => {}
        }
    }
    let Some(timestamp) = timestamp else {
        return Err(VerifyError::Malformed("no t"));
    };
    if tags.is_empty() {
        return Err(VerifyError::Malformed("no v1 signature"));
    }
    let expected = mac(secret, timestamp, delivery_id, body);
    let matched = tags
        .iter()
        .any(|tag| hex::decode(tag).is_ok_and(|tag| expected.clone().verify_slice(&tag).is_ok()));
    if !matched {
        return Err(VerifyError::Mismatch);
    }
    if now.abs_diff(timestamp) > SIGNATURE_TOLERANCE_SECS {
        return Err(VerifyError::Stale {
            timestamp,
            now,
            tolerance_secs: SIGNATURE_TOLERANCE_SECS,
        });
    }
    Ok(())
}

/// True for addresses a webhook must not reach unless private targets are allowed:
/// unspecified / "this network" (0/8, `::`), loopback, private (RFC 1918), CGNAT
/// (100.64/10), link-local (169.254/16, fe80::/10), broadcast, multicast, IPv6 ULA
/// (fc00::/7), and IPv4 addresses embedded in IPv6 (mapped `::ffff:a.b.c.d`, compatible
/// `::a.b.c.d`, NAT64 `64:ff9b::a.b.c.d`) when the embedded address is one of those.
pub fn forbidden_ip(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => forbidden_v4(v4),
        IpAddr::V6(v6) => forbidden_v6(v6),
    }
}

fn forbidden_v4(ip: Ipv4Addr) -> bool {
    let [a, b, ..] = ip.octets();
    a == 0
        || ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_broadcast()
        || ip.is_multicast()
        || (a == 100 && (b & 0xc0) == 64)
}

fn forbidden_v6(ip: Ipv6Addr) -> bool {
    let seg = ip.segments();
    if let Some(v4) = ip.to_ipv4_mapped() {
        return forbidden_v4(v4);
    }
    // IPv4-compatible (::a.b.c.d, deprecated) and NAT64 (64:ff9b::/96) carry an IPv4
    // address that a dual-stack or NAT64 path reaches.
    let embedded = Ipv4Addr::from(((seg[6] as u32) << 16) | seg[7] as u32);
    if seg[..6] == [0; 6] || seg[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        return ip.is_unspecified() || ip.is_loopback() || forbidden_v4(embedded);
    }
    ip.is_multicast()
        || (seg[0] & 0xfe00) == 0xfc00 // unique local, fc00::/7
        || (seg[0] & 0xffc0) == 0xfe80 // link-local, fe80::/10
}

/// Why a webhook target is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    /// Not an absolute http(s) URL with a host.
    #[error("webhook URL {url:?} is not usable: {reason}")]
    BadUrl {
        /// The URL as given.
        url: String,
        /// What is wrong.
        reason: String,
    },
    /// The host is, or resolves to, an address in a private range ([`forbidden_ip`]).
    #[error(
        "webhook target {host} is {addr}, a private, loopback or link-local address \
         (set webhook_allow_private_targets = true in the authority config to allow it)"
    )]
    Forbidden {
        /// The URL's host.
        host: String,
        /// The address it is or resolved to.
        addr: IpAddr,
    },
}

/// Checks a webhook URL as it is configured: an absolute `http://` or `https://` URL with
/// a host, and unless `allow_private`, not a literal address that [`forbidden_ip`]
/// refuses. Host names are checked when resolved, at every attempt.
pub fn check_target(url: &str, allow_private: bool) -> Result<(), TargetError> {
    let bad = |reason: &str| TargetError::BadUrl {
        url: url.to_string(),
        reason: reason.to_string(),
    };
    let parsed = reqwest::Url::parse(url).map_err(|e| bad(&e.to_string()))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(bad("must be an http:// or https:// URL"));
    }
    let Some(host) = parsed.host_str().filter(|h| !h.is_empty()) else {
        return Err(bad("has no host"));
    };
    // The parser has normalised literal addresses (IPv6 in brackets, IPv4 in dotted
    // decimal even if written as 0x7f.1); anything else is a name.
    let Ok(ip) = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<IpAddr>()
    else {
        return Ok(());
    };
    if !allow_private && forbidden_ip(ip) {
        return Err(TargetError::Forbidden {
            host: host.to_string(),
            addr: ip,
        });
    }
    Ok(())
}

/// DNS for webhook attempts: the system resolver, refusing a name if any of its
/// addresses is forbidden. reqwest connects to exactly the addresses returned here.
struct GuardedResolver {
    allow_private: bool,
}

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let allow_private = self.allow_private;
        let host = name.as_str().to_string();
        Box::pin(async move {
            // Port 0: reqwest puts the URL's port in.
            let addrs: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            if let Some(bad) = addrs
                .iter()
                .find(|a| !allow_private && forbidden_ip(a.ip()))
            {
                return Err(Box::new(TargetError::Forbidden {
                    host,
                    addr: bad.ip(),
                }) as _);
            }
            Ok(Box::new(addrs.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// Why one delivery attempt failed.
#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    /// Network or protocol error: retried.
    #[error("webhook request failed: {0}")]
    Transport(String),
    /// The receiver answered with this status (3xx included: redirects are not followed).
    #[error("webhook answered HTTP {0}")]
    Status(u16),
    /// Neither the rule nor the authority has a webhook secret: it cannot be signed.
    #[error("no webhook secret to sign with (set the rule's or the authority's)")]
    NoSecret,
    /// The URL is unusable or its host is a private address: not sent, not retried.
    #[error(transparent)]
    Target(#[from] TargetError),
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
    /// True if another attempt may succeed (connection errors, 3xx, 429, 5xx).
    pub fn retryable(&self) -> bool {
        match self {
            DeliveryError::Transport(_) => true,
            DeliveryError::Status(s) => (300..400).contains(s) || *s == 429 || *s >= 500,
            DeliveryError::NoSecret | DeliveryError::Target(_) => false,
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
    /// `webhook_allow_private_targets`.
    allow_private: bool,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for WebhookSender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookSender")
            .field("allow_private", &self.allow_private)
            .finish_non_exhaustive()
    }
}

impl WebhookSender {
    /// A sender signing with a rule's own secret, or else the global `secret`; targets in
    /// private address space are refused unless `allow_private`.
    pub fn new(
        secret: Option<&[u8]>,
        allow_private: bool,
        metrics: Arc<Metrics>,
    ) -> Result<WebhookSender, DeliveryError> {
        // reqwest is built without a bundled crypto provider; use ring (already in the tree
        // for TLS). Installing twice is harmless.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            // A redirect would carry the signed headers to a host nobody checked.
            .redirect(reqwest::redirect::Policy::none())
            // A proxy would resolve and connect on its own, past the address check.
            .no_proxy()
            .dns_resolver(Arc::new(GuardedResolver { allow_private }))
            .build()
            .map_err(|e| DeliveryError::Transport(e.to_string()))?;
        Ok(WebhookSender {
            client,
            secret: secret.map(|s| Arc::new(s.to_vec())),
            allow_private,
            metrics,
        })
    }

    /// True if a delivery with `rule_secret` (empty: none) can be signed.
    pub fn can_sign(&self, rule_secret: &[u8]) -> bool {
        !rule_secret.is_empty() || self.secret.is_some()
    }

    /// [`check_target`] with this sender's `allow_private`, for a URL being configured.
    pub fn check_target(&self, url: &str) -> Result<(), TargetError> {
        check_target(url, self.allow_private)
    }

    /// One POST of `body` to `url`, signed with `rule_secret` (empty: the global one) and
    /// the current time.
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
        // Literal addresses never reach the resolver: check them here (a rule stored
        // before this check existed, or under another setting, is caught too).
        self.check_target(url)?;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let resp = self
            .client
            .post(url)
            .header("content-type", "application/json")
            .header(SIGNATURE_HEADER, sign(key, now, delivery, body))
            .header(DELIVERY_HEADER, delivery)
            .body(body.to_vec())
            .send()
            .await
            .map_err(|e| match refused_target(&e) {
                Some(t) => DeliveryError::Target(t.clone()),
                None => DeliveryError::Transport(e.to_string()),
            })?;
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
                let result = match e {
                    DeliveryError::Target(_) => "refused",
                    _ => "failed",
                };
                Metrics::count(&self.metrics.webhooks, result);
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

/// The [`TargetError`] the resolver gave, if that is why `e` failed.
fn refused_target(e: &reqwest::Error) -> Option<&TargetError> {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    while let Some(c) = cause {
        if let Some(t) = c.downcast_ref::<TargetError>() {
            return Some(t);
        }
        cause = c.source();
    }
    None
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
    fn redirects_are_retried_like_other_failures() {
        assert!(DeliveryError::Status(302).retryable());
        assert!(DeliveryError::Status(503).retryable());
        assert!(!DeliveryError::Status(404).retryable());
    }

    #[test]
    fn signature_covers_timestamp_id_and_body() {
        // HMAC-SHA256("k", "1700000000.acme-half-7.{}"), computed independently with
        // `printf '1700000000.acme-half-7.{}' | openssl dgst -sha256 -hmac k`.
        let h = sign(b"k", 1_700_000_000, "acme-half-7", b"{}");
        assert_eq!(
            h,
            "t=1700000000,v1=3a29ab9fc0da9863e8677e9a234e7fdac9f1116195a64778c84c4b6ef8b401a6"
        );
        assert_eq!(
            verify(b"k", &h, "acme-half-7", b"{}", 1_700_000_000),
            Ok(())
        );
        // Any one of secret, id, body or timestamp changed: no match.
        assert_eq!(
            verify(b"K", &h, "acme-half-7", b"{}", 1_700_000_000),
            Err(VerifyError::Mismatch)
        );
        assert_eq!(
            verify(b"k", &h, "acme-half-8", b"{}", 1_700_000_000),
            Err(VerifyError::Mismatch)
        );
        assert_eq!(
            verify(b"k", &h, "acme-half-7", b"{ }", 1_700_000_000),
            Err(VerifyError::Mismatch)
        );
        let moved = h.replace("t=1700000000", "t=1700000001");
        assert_eq!(
            verify(b"k", &moved, "acme-half-7", b"{}", 1_700_000_001),
            Err(VerifyError::Mismatch)
        );
    }

    #[test]
    fn verify_allows_300_seconds_either_way_and_no_more() {
        let h = sign(b"k", 10_000, "d", b"{}");
        for now in [9_700, 10_000, 10_300] {
            assert_eq!(verify(b"k", &h, "d", b"{}", now), Ok(()), "now={now}");
        }
        for now in [9_699, 10_301, 0, u64::MAX] {
            assert!(
                matches!(
                    verify(b"k", &h, "d", b"{}", now),
                    Err(VerifyError::Stale {
                        timestamp: 10_000,
                        ..
                    })
                ),
                "now={now}"
            );
        }
    }

    #[test]
    fn verify_parses_the_header_strictly_but_ignores_unknown_schemes() {
        let h = sign(b"k", 5, "d", b"{}");
        let v1 = h.split_once(",v1=").unwrap().1;
        // Rotation: a wrong v1 next to the right one passes; a v0 is ignored.
        let two = format!("t=5, v0=zz, v1={}, v1={v1}", "00".repeat(32));
        assert_eq!(verify(b"k", &two, "d", b"{}", 5), Ok(()));
        for bad in ["", "t=5", "v1=00", "t=x,v1=00", "t=5,t=5,v1=00", "t5,v1=00"] {
            assert!(
                matches!(
                    verify(b"k", bad, "d", b"{}", 5),
                    Err(VerifyError::Malformed(_))
                ),
                "{bad:?}"
            );
        }
        assert_eq!(
            verify(b"k", "t=5,v1=not-hex", "d", b"{}", 5),
            Err(VerifyError::Mismatch)
        );
        // An id that could move bytes between itself and the body is refused.
        assert!(matches!(
            verify(b"k", &h, "d.{", b"}", 5),
            Err(VerifyError::Malformed(_))
        ));
        assert!(matches!(
            verify(b"k", &h, "", b"{}", 5),
            Err(VerifyError::Malformed(_))
        ));
    }

    #[test]
    fn private_loopback_link_local_and_mapped_addresses_are_forbidden() {
        let forbidden = [
            "0.0.0.0",
            "0.1.2.3",
            "127.0.0.1",
            "127.255.0.9",
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "100.127.255.255",
            "255.255.255.255",
            "224.0.0.1",
            "::",
            "::1",
            "fc00::1",
            "fd12:3456::1",
            "fe80::1",
            "febf::1",
            "ff02::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "::ffff:10.0.0.1",
            "::127.0.0.1",
            "64:ff9b::a9fe:a9fe",
        ];
        for a in forbidden {
            assert!(forbidden_ip(a.parse().unwrap()), "{a} should be forbidden");
        }
        let allowed = [
            "1.1.1.1",
            "8.8.8.8",
            "172.32.0.1",
            "100.128.0.1",
            "100.63.255.255",
            "169.255.0.1",
            "2606:4700::1111",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
            "fec0::1",
        ];
        for a in allowed {
            assert!(!forbidden_ip(a.parse().unwrap()), "{a} should be allowed");
        }
    }

    #[test]
    fn configured_urls_are_checked_for_literal_private_hosts() {
        for url in [
            "http://127.0.0.1:9/hook",
            "http://[::1]/x",
            "https://169.254.169.254/latest/meta-data",
            "http://[::ffff:7f00:1]/",
            "http://0x7f.1/",
            "http://2130706433/",
        ] {
            assert!(
                matches!(check_target(url, false), Err(TargetError::Forbidden { .. })),
                "{url}"
            );
            assert_eq!(check_target(url, true), Ok(()), "{url}");
        }
        for url in [
            "https://hooks.example.com/a",
            "http://8.8.8.8/",
            "http://localhost/",
        ] {
            assert_eq!(check_target(url, false), Ok(()), "{url}");
        }
        for url in [
            "ftp://example.com/",
            "not a url",
            "http://",
            "file:///etc/passwd",
        ] {
            assert!(
                matches!(check_target(url, true), Err(TargetError::BadUrl { .. })),
                "{url}"
            );
        }
        let e = check_target("http://10.0.0.5/", false)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("10.0.0.5") && e.contains("webhook_allow_private_targets"),
            "{e}"
        );
    }
}

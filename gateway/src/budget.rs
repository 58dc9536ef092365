//! What the pod holds of each tenant's wallet, read from the sidecar's `/metrics` (the
//! agent API of the region answers "may I spend this?", not "how much is left?").
//!
//! Every poll reads, per tenant, the wallet pool's uncarved credits plus the credits
//! carved into lane allowances (`tollgate_sidecar_pool_available_micro_credits` and
//! `tollgate_sidecar_allowance_micro_credits` with `limit="TENANT/wallet"`), what the pod
//! committed (`..._consumed_micro_credits_total`) and the recent burn rate
//! (`..._burn_rate_micro_credits_per_second`). This is the pod's lease, not the tenant's
//! whole balance at the authority: the gateway can spend no more than it without a new lease.

use std::collections::HashMap;
use std::sync::RwLock;

/// One tenant's wallet as the pod sees it, in micro-credits.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Wallet {
    /// Held by the pod and not yet spent (pool plus lane allowances).
    pub remaining: u64,
    /// Committed by the pod's agents so far.
    pub consumed: u64,
    /// Recent burn per second.
    pub burn_per_sec: u64,
}

impl Wallet {
    /// Seconds until `remaining` is spent at the current burn; `None` when nothing burns.
    pub fn secs_to_depletion(&self) -> Option<u64> {
        (self.burn_per_sec > 0).then(|| self.remaining / self.burn_per_sec)
    }
}

/// The latest reading, shared by the pollers and the request handlers.
#[derive(Debug, Default)]
pub struct Budgets {
    wallets: RwLock<HashMap<String, Wallet>>,
    /// Per tenant: when the authority projects its balance to run out (unix ms), as last
    /// read (the degrade rule's input); absent or 0: not projected.
    depletion: RwLock<HashMap<String, u64>>,
}

impl Budgets {
    /// The tenant's wallet at the last poll, if the sidecar reported it.
    pub fn wallet(&self, tenant: &str) -> Option<Wallet> {
        self.wallets
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(tenant)
            .copied()
    }

    /// Records the authority's projected depletion of `tenant` (unix ms, 0: none).
    pub fn set_depletion(&self, tenant: &str, at_unix_ms: u64) {
        self.depletion
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(tenant.to_owned(), at_unix_ms);
    }

    /// Seconds until the projected depletion of `tenant` if it is projected within
    /// `horizon_secs` of `now_unix_ms`.
    pub fn depletes_within(
        &self,
        tenant: &str,
        horizon_secs: u64,
        now_unix_ms: u64,
    ) -> Option<u64> {
        let at = *self
            .depletion
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(tenant)?;
        if at == 0 {
            return None;
        }
        let left = at.saturating_sub(now_unix_ms) / 1000;
        (left <= horizon_secs).then_some(left)
    }

    /// Replaces the reading with what `metrics` (Prometheus text) says.
    pub fn update(&self, metrics: &str) {
        let parsed = parse(metrics);
        *self.wallets.write().unwrap_or_else(|e| e.into_inner()) = parsed;
    }
}

/// The wallets in a Prometheus text exposition.
pub fn parse(text: &str) -> HashMap<String, Wallet> {
    let mut out: HashMap<String, Wallet> = HashMap::new();
    for line in text.lines() {
        if line.starts_with('#') {
            continue;
        }
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let Ok(value) = value.trim().parse::<u64>() else {
            continue;
        };
        let Some((name, labels)) = series.split_once('{') else {
            continue;
        };
        let Some(tenant) = labels
            .split(',')
            .find_map(|l| l.trim().strip_prefix("limit=\""))
            .and_then(|l| l.trim_end_matches('}').strip_suffix('"'))
            .and_then(|l| l.strip_suffix("/wallet"))
        else {
            continue;
        };
        let w = out.entry(tenant.to_owned()).or_default();
        match name {
            "tollgate_sidecar_pool_available_micro_credits"
            | "tollgate_sidecar_allowance_micro_credits" => {
                w.remaining = w.remaining.saturating_add(value)
            }
            "tollgate_sidecar_consumed_micro_credits_total" => w.consumed = value,
            "tollgate_sidecar_burn_rate_micro_credits_per_second" => w.burn_per_sec = value,
            _ => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_wallet_series() {
        let text = "# HELP x\n\
            tollgate_sidecar_pool_available_micro_credits{limit=\"acme/wallet\"} 700\n\
            tollgate_sidecar_allowance_micro_credits{limit=\"acme/wallet\"} 42\n\
            tollgate_sidecar_allowance_micro_credits{limit=\"acme/minute\"} 5\n\
            tollgate_sidecar_consumed_micro_credits_total{limit=\"acme/wallet\"} 9\n\
            tollgate_sidecar_burn_rate_micro_credits_per_second{limit=\"acme/wallet\"} 100\n\
            tollgate_sidecar_ring_depth_records 3\n";
        let w = parse(text)["acme"];
        assert_eq!(
            w,
            Wallet {
                remaining: 742,
                consumed: 9,
                burn_per_sec: 100
            }
        );
        assert_eq!(w.secs_to_depletion(), Some(7));
        assert_eq!(Wallet::default().secs_to_depletion(), None);
    }

    #[test]
    fn depletion_within_the_horizon() {
        let b = Budgets::default();
        assert_eq!(b.depletes_within("acme", 60, 1_000_000), None);
        b.set_depletion("acme", 1_030_000);
        assert_eq!(b.depletes_within("acme", 60, 1_000_000), Some(30));
        assert_eq!(b.depletes_within("acme", 10, 1_000_000), None);
        // Already past: within any horizon.
        assert_eq!(b.depletes_within("acme", 1, 2_000_000), Some(0));
        b.set_depletion("acme", 0);
        assert_eq!(b.depletes_within("acme", 60, 1_000_000), None);
    }
}

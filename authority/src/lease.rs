//! Leases: how the authority hands budget to sidecars.
//!
//! **Invariant.** For every limit, what the authority has leased out and not taken back
//! never exceeds what that limit allows: for the wallet, every wallet lease is backed by a
//! ledger hold (the ledger refuses a hold past the available balance or the hard cap, so
//! the sum of open holds plus posted spend stays under both); for a window quota, the sum
//! of the leases granted in the current window (minus amounts returned) stays at most the
//! window's maximum. Both are kept in the store, not in this table, so they hold across
//! a restart and across replicas: holds are ledger rows locked per tenant, and a window's
//! claims are one row updated conditionally (`policy_store::PolicyStore::claim_window`).
//! A window lease that expires stays claimed (spent or not) until its window ends.
//!
//! **Tasks.** A task's budget (its terms, from its first registration, in the ledger) is
//! leased like a window that never ends: one claims row per task (rule `task:<id>`,
//! window start 0), claimed up to the budget and never past it, and less what posted
//! usage spent beyond the claims (overruns). A task closed by posted usage (completed,
//! `max_calls` calls posted, its budget spent) leases nothing more: demands are refused
//! with `TASK_SPENT`, and sidecars holding its leases are told to shrink them to zero.
//! Unspent credits a sidecar returns go back to the task; a lease whose sidecar never
//! returns it stays claimed, so the task can lose at most that sidecar's outstanding
//! leases of it and never spends past its budget.
//!
//! **Fair share (Doorman's proportional share).** Each sidecar reports per limit what it
//! holds and what more it wants (sized by the sidecar from its recent burn). A sidecar's
//! *want* is `held + desired`. Capacity is what is leased out now plus what could still be
//! leased (`free`). If every live sidecar's want fits, each gets its desire. Otherwise
//! capacity is split in proportion to wants and a sidecar is granted only up to its share
//! minus what it already holds, so a busy sidecar cannot starve a quiet one and a new
//! sidecar gets a share as soon as it reports demand. Demand older than two lease TTLs is
//! forgotten (a sidecar that went away stops weighing). A grant is also bounded by
//! `free`, by the configured largest lease, and below the smallest worthwhile lease
//! nothing is sent.
//!
//! **Expiry and renewal.** A lease is valid for the TTL. Renewal is a new lease (holds
//! are never edited). The hold behind a wallet lease times out at expiry plus the settle
//! grace, so late batches (sent just before expiry) still draw from it.
//!
//! **The sidecar that never comes back.** At expiry plus the settle grace the authority
//! settles every wallet lease not returned: the ledger ends its hold (what usage drew is
//! posted, the undrawn rest goes back to the grants). If the sidecar has no live session
//! then, the lease counts in `tollgate_authority_leases_unreported_total` and its undrawn
//! amount in `..._leases_unreported_micro_total`. The effect is bounded: nothing is charged
//! that usage did not draw, and what the vanished sidecar may have spent without reporting
//! is at most its outstanding leases (at most `ttl + grace` old). If it comes back later
//! and re-sends batches, that usage is still posted (from grants, as overage, or recorded
//! as overrun past the cap: never lost).
//!
//! **Restart.** Wallet holds and window claims are durable in the store; this table
//! (which sidecar holds which lease, for fair share and returns) lives in memory. For
//! `relearn_grace` after start the authority grants nothing new: reconnecting sidecars
//! report their held leases in `Register`, which rebuilds the per-sidecar holdings before
//! any new grant is computed.
//!
//! **Replicas.** Each replica runs fair share over the sidecars connected to it; the
//! limits themselves are enforced in the store, so the fleet never passes them whichever
//! replica a sidecar talks to (a sidecar may get less than a fleet-wide fair share would
//! give it, never more than the limit allows).

use std::collections::BTreeMap;

use tollgate_proto::v1::LimitKey;

/// What backs a lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Backing {
    /// A ledger hold (wallet lease).
    Hold {
        /// The hold's per-tenant id.
        hold_id: u64,
    },
    /// A window quota allocation.
    Window {
        /// Quota rule id.
        rule_id: String,
        /// Start of the window it was granted in (unix ms).
        window_start_ms: u64,
    },
    /// A claim on a task's budget.
    Task {
        /// The task id.
        task: String,
    },
    /// A limit with no rule (unbounded): nothing to back.
    Unbounded,
}

/// One outstanding lease as the authority tracks it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseState {
    /// Id sent to the sidecar.
    pub lease_id: String,
    /// Holder.
    pub sidecar: String,
    /// Limit.
    pub limit: LimitKey,
    /// Canonical limit key.
    pub limit_key: String,
    /// Amount granted.
    pub amount: u64,
    /// Amount handed back so far.
    pub returned: u64,
    /// Valid until (unix ms).
    pub expires_ms: u64,
    /// Backing.
    pub backing: Backing,
    /// The sidecar closed it; settle after this batch seq is durable.
    pub closing_after_seq: Option<u64>,
}

impl LeaseState {
    /// What the holder may still spend from it in the authority's view.
    pub fn outstanding(&self) -> u64 {
        self.amount.saturating_sub(self.returned)
    }
}

/// One sidecar's latest demand on one limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Demand {
    /// What it holds now.
    pub held: u64,
    /// What more it wants.
    pub desired: u64,
    /// Burn, micro-credits per second.
    pub burn_per_sec: u64,
    /// When reported (unix ms).
    pub at_ms: u64,
}

/// Inputs of one fair-share decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShareInput {
    /// What could still be leased on this limit now.
    pub free: u64,
    /// What this sidecar holds outstanding (authority's view).
    pub mine_outstanding: u64,
    /// What all sidecars together hold outstanding, this one included.
    pub all_outstanding: u64,
    /// This sidecar's want (held + desired).
    pub my_want: u64,
    /// Sum of every live sidecar's want, this one included.
    pub all_want: u64,
    /// What this sidecar asked for now.
    pub desired: u64,
    /// Largest lease (0 = unbounded).
    pub max_lease: u64,
}

/// Doorman-style proportional share: how much to grant now (may be 0).
pub fn fair_grant(i: ShareInput) -> u64 {
    let capacity = i.free.saturating_add(i.all_outstanding);
    let target = if i.all_want <= capacity || i.all_want == 0 {
        i.mine_outstanding.saturating_add(i.desired)
    } else {
        // share = capacity * my_want / all_want, computed without overflow.
        (u128::from(capacity) * u128::from(i.my_want) / u128::from(i.all_want)) as u64
    };
    let mut g = target
        .saturating_sub(i.mine_outstanding)
        .min(i.desired)
        .min(i.free);
    if i.max_lease > 0 {
        g = g.min(i.max_lease);
    }
    g
}

/// The authority's lease book (in memory; wallet holds are also in the store).
#[derive(Debug, Default)]
pub struct LeaseTable {
    leases: BTreeMap<String, LeaseState>,
    /// (limit key, sidecar) -> demand.
    demand: BTreeMap<(String, String), Demand>,
    next_id: u64,
}

impl LeaseTable {
    /// An empty table.
    pub fn new() -> LeaseTable {
        LeaseTable::default()
    }

    /// An empty table whose serials start after `serial`.
    pub fn starting_at(serial: u64) -> LeaseTable {
        LeaseTable {
            next_id: serial,
            ..LeaseTable::default()
        }
    }

    /// A fresh unique lease-id suffix (combined with the backing by callers).
    pub fn next_serial(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    /// Records (replaces) a sidecar's demand on a limit.
    pub fn set_demand(&mut self, limit_key: &str, sidecar: &str, d: Demand) {
        self.demand
            .insert((limit_key.to_string(), sidecar.to_string()), d);
    }

    /// Sum of the wants (held + desired) of sidecars that reported on `limit_key` since
    /// `fresh_since_ms`.
    pub fn all_want(&self, limit_key: &str, fresh_since_ms: u64) -> u64 {
        self.demand
            .iter()
            .filter(|((k, _), d)| k == limit_key && d.at_ms >= fresh_since_ms)
            .map(|(_, d)| d.held.saturating_add(d.desired))
            .fold(0u64, u64::saturating_add)
    }

    /// The latest demand of `sidecar` on `limit_key`.
    pub fn demand(&self, limit_key: &str, sidecar: &str) -> Option<Demand> {
        self.demand
            .get(&(limit_key.to_string(), sidecar.to_string()))
            .copied()
    }

    /// Sum of what live sidecars report holding on `limit_key`.
    pub fn all_held(&self, limit_key: &str, fresh_since_ms: u64) -> u64 {
        self.demand
            .iter()
            .filter(|((k, _), d)| k == limit_key && d.at_ms >= fresh_since_ms)
            .map(|(_, d)| d.held)
            .fold(0u64, u64::saturating_add)
    }

    /// After a grant: count it as held and no longer desired until the next report, so a
    /// second decision before that report does not grant it twice.
    pub fn note_granted(&mut self, limit_key: &str, sidecar: &str, amount: u64) {
        if let Some(d) = self
            .demand
            .get_mut(&(limit_key.to_string(), sidecar.to_string()))
        {
            d.held = d.held.saturating_add(amount);
            d.desired = d.desired.saturating_sub(amount);
        }
    }

    /// Every recorded demand: (limit key, sidecar, demand).
    pub fn demands(&self) -> Vec<(String, String, Demand)> {
        self.demand
            .iter()
            .map(|((k, s), d)| (k.clone(), s.clone(), *d))
            .collect()
    }

    /// Inserts a lease.
    pub fn insert(&mut self, l: LeaseState) {
        self.leases.insert(l.lease_id.clone(), l);
    }

    /// A lease by id.
    pub fn get(&self, id: &str) -> Option<&LeaseState> {
        self.leases.get(id)
    }

    /// A lease by id, mutable.
    pub fn get_mut(&mut self, id: &str) -> Option<&mut LeaseState> {
        self.leases.get_mut(id)
    }

    /// Removes a lease.
    pub fn remove(&mut self, id: &str) -> Option<LeaseState> {
        self.leases.remove(id)
    }

    /// Outstanding on `limit_key`: (this sidecar's, everyone's).
    pub fn outstanding(&self, limit_key: &str, sidecar: &str) -> (u64, u64) {
        let mut mine = 0u64;
        let mut all = 0u64;
        for l in self.leases.values().filter(|l| l.limit_key == limit_key) {
            all = all.saturating_add(l.outstanding());
            if l.sidecar == sidecar {
                mine = mine.saturating_add(l.outstanding());
            }
        }
        (mine, all)
    }

    /// Leases on `limit_key`.
    pub fn of_limit(&self, limit_key: &str) -> Vec<&LeaseState> {
        self.leases
            .values()
            .filter(|l| l.limit_key == limit_key)
            .collect()
    }

    /// Leases of `sidecar`.
    pub fn of_sidecar(&self, sidecar: &str) -> Vec<&LeaseState> {
        self.leases
            .values()
            .filter(|l| l.sidecar == sidecar)
            .collect()
    }

    /// Wallet leases of a tenant.
    pub fn wallet_leases_of(&self, tenant: &str) -> Vec<&LeaseState> {
        self.leases
            .values()
            .filter(|l| l.limit.tenant == tenant && matches!(l.backing, Backing::Hold { .. }))
            .collect()
    }

    /// Leases whose settle time (`expires + grace`) has come.
    pub fn due(&self, now_ms: u64, grace_ms: u64) -> Vec<String> {
        self.leases
            .values()
            .filter(|l| l.expires_ms.saturating_add(grace_ms) <= now_ms)
            .map(|l| l.lease_id.clone())
            .collect()
    }

    /// Closing leases of `sidecar` whose last batch is now durable.
    pub fn closable(&self, sidecar: &str, durable_seq: u64) -> Vec<String> {
        self.leases
            .values()
            .filter(|l| {
                l.sidecar == sidecar && l.closing_after_seq.is_some_and(|s| s <= durable_seq)
            })
            .map(|l| l.lease_id.clone())
            .collect()
    }

    /// Number of leases.
    pub fn len(&self) -> usize {
        self.leases.len()
    }

    /// True if empty.
    pub fn is_empty(&self) -> bool {
        self.leases.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inp(
        free: u64,
        mine: u64,
        all: u64,
        my_want: u64,
        all_want: u64,
        desired: u64,
    ) -> ShareInput {
        ShareInput {
            free,
            mine_outstanding: mine,
            all_outstanding: all,
            my_want,
            all_want,
            desired,
            max_lease: 0,
        }
    }

    #[test]
    fn everyone_gets_their_desire_when_it_fits() {
        assert_eq!(fair_grant(inp(1000, 0, 0, 100, 300, 100)), 100);
    }

    #[test]
    fn scarce_capacity_is_split_by_want() {
        // Capacity 1000 (free 600 + 400 outstanding with the other sidecar); wants 1000 and
        // 3000: this sidecar's share is 250.
        assert_eq!(fair_grant(inp(600, 0, 400, 1000, 4000, 1000)), 250);
        // A sidecar already at its share gets nothing more.
        assert_eq!(fair_grant(inp(350, 250, 650, 1000, 4000, 1000)), 0);
    }

    #[test]
    fn never_past_free_or_max() {
        assert_eq!(fair_grant(inp(50, 0, 0, 100, 100, 100)), 50);
        let mut i = inp(1000, 0, 0, 100, 100, 100);
        i.max_lease = 30;
        assert_eq!(fair_grant(i), 30);
        assert_eq!(fair_grant(inp(0, 0, 0, 100, 100, 100)), 0);
    }

    #[test]
    fn table_tracks_outstanding_and_due() {
        let mut t = LeaseTable::new();
        let limit = LimitKey::wallet("acme");
        for (id, sc, amt, exp) in [("a", "s1", 100, 10), ("b", "s2", 50, 20)] {
            t.insert(LeaseState {
                lease_id: id.into(),
                sidecar: sc.into(),
                limit: limit.clone(),
                limit_key: "acme/wallet".into(),
                amount: amt,
                returned: 0,
                expires_ms: exp,
                backing: Backing::Hold { hold_id: 1 },
                closing_after_seq: None,
            });
        }
        assert_eq!(t.outstanding("acme/wallet", "s1"), (100, 150));
        t.get_mut("a").unwrap().returned = 40;
        assert_eq!(t.outstanding("acme/wallet", "s1"), (60, 110));
        assert_eq!(t.due(15, 0), vec!["a".to_string()]);
        assert_eq!(t.due(15, 10).len(), 0);
        assert_eq!(t.wallet_leases_of("acme").len(), 2);
    }
}

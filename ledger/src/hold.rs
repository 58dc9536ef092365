//! Holds: pending debits that back a lease.
//!
//! A hold reserves credits from grants (in deduction order) and, when the tenant has a
//! plan, from the plan's room under its hard cap. Usage posted by the hold's owner
//! (the sidecar holding the lease) draws from its open holds first. A hold ends exactly
//! once: posted (some of it was drawn), voided (nothing drawn, or released by the
//! owner), or expired (its timeout passed). Its terms (amount, parts, timeout) are never
//! edited: a changed lease is a new hold. While open, its owner may hand part of what is
//! undrawn back early (a lease returned in part): those credits go back at once and are
//! counted in `released`. What is left undrawn when it ends goes back to
//! the grant it came from, or expires if that grant has expired or reset since (no
//! rollover through a hold).

use serde::{Deserialize, Serialize};
use tollgate_core::Credits;

use crate::clock::Timestamp;
use crate::ids::{GrantId, HoldId, TenantId};

/// Where credits came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Funding {
    /// A grant paid.
    Grant(GrantId),
    /// The tenant's plan: usage past every grant, counted in the month's `PeriodUsage`
    /// (included allowance first, then billed overage), under the plan's hard cap.
    Plan,
    /// Overrun: usage that no hold, no grant and no room under the plan's cap could pay.
    /// Recorded and reported, never billed, never moves credits (see the crate docs).
    Overrun,
    /// Nothing to pay: calls that cost nothing (an agent-initiated call a per-request
    /// price makes free, a call on a per-outcome model, a task's completion record). Their
    /// posting carries the counts (calls, tokens, outcomes, work units) with amount 0, so
    /// statements count every call.
    Free,
}

impl Funding {
    /// Its kind's name and grant id: the stores' `funding` and `grant_id` columns.
    pub fn to_parts(self) -> (&'static str, Option<u64>) {
        match self {
            Funding::Grant(g) => ("grant", Some(g.0)),
            Funding::Plan => ("plan", None),
            Funding::Overrun => ("overrun", None),
            Funding::Free => ("free", None),
        }
    }

    /// The source [`Funding::to_parts`] made these parts of, `None` if none.
    pub fn from_parts(kind: &str, grant: Option<u64>) -> Option<Funding> {
        match (kind, grant) {
            ("grant", Some(g)) => Some(Funding::Grant(crate::ids::GrantId(g))),
            ("plan", _) => Some(Funding::Plan),
            ("overrun", _) => Some(Funding::Overrun),
            ("free", _) => Some(Funding::Free),
            _ => None,
        }
    }
}

impl Funding {
    /// The paying grant, if a grant paid.
    pub fn grant(self) -> Option<GrantId> {
        match self {
            Funding::Grant(g) => Some(g),
            _ => None,
        }
    }
}

/// State of a hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HoldStatus {
    /// Reserving credits.
    Open,
    /// Ended with some credits drawn; the rest released.
    Posted,
    /// Ended with nothing drawn (or released by its owner before any draw).
    Voided,
    /// Its timeout passed; the undrawn rest was released.
    Expired,
}

impl HoldStatus {
    /// Every status.
    pub const ALL: [HoldStatus; 4] = [
        HoldStatus::Open,
        HoldStatus::Posted,
        HoldStatus::Voided,
        HoldStatus::Expired,
    ];

    /// Its name: in messages and in the stores' `status` column.
    pub fn as_str(self) -> &'static str {
        match self {
            HoldStatus::Open => "open",
            HoldStatus::Posted => "posted",
            HoldStatus::Voided => "voided",
            HoldStatus::Expired => "expired",
        }
    }

    /// The status of a name, `None` if it names none.
    pub fn from_name(s: &str) -> Option<HoldStatus> {
        HoldStatus::ALL.into_iter().find(|h| h.as_str() == s)
    }
}

/// What a hold wants.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HoldRequest {
    /// Who holds it (the sidecar id of the lease). Usage batches from this sidecar draw
    /// from its open holds first.
    pub owner: String,
    /// Credits wanted.
    pub amount: Credits,
    /// Accept a smaller hold, down to this amount (a lease takes what is there).
    /// `min_amount == amount` means all or nothing. Must be `<= amount`.
    pub min_amount: Credits,
    /// Seconds until the hold expires if not posted or voided. Must be non-zero.
    pub ttl_secs: u64,
}

/// One part of a hold: credits reserved from one source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct HoldPart {
    /// The source (a grant, or the plan; never overrun).
    pub funding: Funding,
    /// The grant's period when reserved (0 for the plan).
    pub period: u32,
    /// Credits reserved.
    pub amount: Credits,
    /// Credits drawn by usage so far.
    pub drawn: Credits,
    /// Credits handed back before the hold ended (a lease returned in part).
    #[serde(default)]
    pub released: Credits,
}

impl HoldPart {
    /// Credits of this part still reserved: neither drawn nor handed back.
    pub fn undrawn(&self) -> Credits {
        self.amount
            .saturating_sub(self.drawn)
            .saturating_sub(self.released)
    }
}

/// A hold and its state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hold {
    /// Owner tenant.
    pub tenant: TenantId,
    /// Per-tenant id.
    pub id: HoldId,
    /// The lease holder (sidecar id).
    pub owner: String,
    /// Credits reserved at creation (the sum of the parts).
    pub amount: Credits,
    /// Credits drawn by usage so far.
    pub drawn: Credits,
    /// Credits released: handed back early while open ([`crate::Ledger::reduce_hold`]) plus
    /// the undrawn rest when it ended (to the grants, or expired). Once ended,
    /// `drawn + released == amount`.
    pub released: Credits,
    /// State.
    pub status: HoldStatus,
    /// Creation time.
    pub created_at: Timestamp,
    /// Timeout.
    pub expires_at: Timestamp,
    /// When it ended, if it has.
    pub closed_at: Option<Timestamp>,
    /// Sources, in deduction order.
    pub parts: Vec<HoldPart>,
}

impl Hold {
    /// Credits still reserved and undrawn (zero once ended).
    pub fn remaining(&self) -> Credits {
        if self.status == HoldStatus::Open {
            self.amount
                .saturating_sub(self.drawn)
                .saturating_sub(self.released)
        } else {
            Credits::ZERO
        }
    }
}

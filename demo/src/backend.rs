//! What the sidecars talk to: the real authority on the embedded store when it can be
//! started in this build, else the simulated in-memory lease source ([`crate::local`]),
//! said plainly in the output.

use std::fmt::Write;
use std::net::SocketAddr;
use std::path::Path;

use crate::local::LocalSource;
use crate::scenario::TENANT;
use crate::setup::{self, Budget};

/// A balance reading for the progress line.
#[derive(Debug, Clone)]
pub struct BalanceView {
    /// Credits the tenant can still spend (micro).
    pub spendable: u64,
    /// Which money pays now: trial, purchased, overage, capped.
    pub phase: String,
}

/// The lease source the demo runs against.
#[derive(Debug)]
pub enum Backend {
    /// The simulated in-memory lease source.
    Local {
        /// The source.
        source: LocalSource,
        /// Where it listens.
        addr: SocketAddr,
        /// The tenant's budget.
        budget: Budget,
    },
}

fn phase(posted: u64, budget: &Budget) -> String {
    if posted < budget.trial {
        "paying: trial    ".into()
    } else if posted < budget.trial + budget.purchased {
        "paying: purchased".into()
    } else if posted < budget.hard_cap {
        "paying: overage  ".into()
    } else {
        "HARD CAP reached ".into()
    }
}

use crate::scenario::cr;

impl Backend {
    /// Starts the backend in-process on loopback.
    pub async fn start(_dir: &Path, budget: Budget) -> anyhow::Result<Backend> {
        let source = LocalSource::new(TENANT, budget.hard_cap, setup::price_book(TENANT));
        let addr = source.serve().await?;
        Ok(Backend::Local {
            source,
            addr,
            budget,
        })
    }

    /// One line saying what runs.
    pub fn describe(&self) -> String {
        match self {
            Backend::Local { addr, .. } => format!(
                "authority: SIMULATED in-memory lease source on {addr} (the real authority is not available in this build: \
                 no ledger, no grant order, no audit chain; money is tracked in memory only)"
            ),
        }
    }

    /// The URL sidecars connect to.
    pub fn url(&self) -> String {
        match self {
            Backend::Local { addr, .. } => format!("http://{addr}"),
        }
    }

    /// The tenant's balance now.
    pub async fn balance(&self) -> BalanceView {
        match self {
            Backend::Local { source, budget, .. } => {
                let t = source.totals();
                BalanceView {
                    spendable: source.left(),
                    phase: phase(t.posted, budget),
                }
            }
        }
    }

    /// Prints the statement and the checks; `fleet_spent`/`fleet_calls` is what the agents
    /// committed, to reconcile with what was posted.
    pub async fn finish(&self, fleet_spent: u64, fleet_calls: u64) -> anyhow::Result<String> {
        let mut out = String::new();
        match self {
            Backend::Local { source, budget, .. } => {
                let t = source.totals();
                writeln!(
                    out,
                    "\n== Statement for {TENANT} (SIMULATED lease source) =="
                )?;
                writeln!(
                    out,
                    "  posted {} cr in {} calls ({} batches, {} re-sent duplicates ignored)",
                    cr(t.posted),
                    t.records,
                    t.batches,
                    t.duplicates
                )?;
                let trial = t.posted.min(budget.trial);
                let purchased = t.posted.saturating_sub(budget.trial).min(budget.purchased);
                let overage = t.posted.saturating_sub(budget.trial + budget.purchased);
                writeln!(
                    out,
                    "  by grant (simulated order): trial {} cr, purchased {} cr, overage {} cr (cap {} cr)",
                    cr(trial),
                    cr(purchased),
                    cr(overage),
                    cr(budget.hard_cap)
                )?;
                writeln!(out, "  by model:")?;
                for (m, (amt, calls)) in &t.by_model {
                    writeln!(out, "    {m:<18} {calls:>7} calls {:>10} cr", cr(*amt))?;
                }
                writeln!(out, "  by agent (pod/process/lane):")?;
                for (a, (amt, calls)) in &t.by_agent {
                    writeln!(out, "    {a:<28} {calls:>7} calls {:>10} cr", cr(*amt))?;
                }
                let ok = t.posted == fleet_spent && t.records == fleet_calls;
                writeln!(
                    out,
                    "  reconciliation: agents committed {} cr in {fleet_calls} calls; posted {} cr in {} calls: {}",
                    cr(fleet_spent),
                    cr(t.posted),
                    t.records,
                    if ok { "exact" } else { "MISMATCH" }
                )?;
                writeln!(
                    out,
                    "  cap respected: {}",
                    if t.posted <= budget.hard_cap {
                        "yes"
                    } else {
                        "NO"
                    }
                )?;
                writeln!(
                    out,
                    "  leases outstanding after shutdown: {} cr",
                    cr(t.leased_out)
                )?;
                writeln!(
                    out,
                    "  audit chain: not available (simulated lease source has none)"
                )?;
                if !ok {
                    anyhow::bail!(
                        "{out}\nthe posted usage does not match what the agents committed"
                    );
                }
            }
        }
        Ok(out)
    }
}

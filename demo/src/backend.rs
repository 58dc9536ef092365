//! What the sidecars talk to: the real authority on the embedded store when it can be
//! started in this build, else the simulated in-memory lease source ([`crate::local`]),
//! said plainly in the output.

use std::fmt::Write;
use std::net::SocketAddr;
use std::path::Path;

use tollgate_authority::config::{Config as AuthorityConfig, LeaseConfig, SidecarCredential};
use tollgate_authority::server::{Running as Authority, ServeOptions};
use tollgate_proto::v1::admin_service_client::AdminServiceClient;
use tollgate_proto::v1::{
    GetBalanceRequest, GetStatementRequest, ListGrantsRequest, StatementLine, VerifyAuditRequest,
};
use tonic::transport::Channel;

use crate::local::LocalSource;
use crate::setup::{self, Budget, TENANT, cr, money};

/// A balance reading for the progress line.
#[derive(Debug, Clone)]
pub struct BalanceView {
    /// Credits the tenant can still spend (micro).
    pub spendable: u64,
    /// Which money pays now: trial, purchased, overage, capped.
    pub phase: String,
}

/// The demo's admin token (the authority runs on loopback in a temporary folder).
pub const ADMIN_TOKEN: &str = "demo-admin-token";

/// The lease source the demo runs against.
#[derive(Debug)]
pub enum Backend {
    /// The real authority on the embedded SQLite store, in-process on loopback.
    Real {
        /// The running authority.
        authority: Box<Authority>,
        /// An admin client.
        admin: AdminServiceClient<Channel>,
        /// Where the store lives.
        store: String,
        /// The tenant's budget.
        budget: Budget,
    },
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

impl Backend {
    /// Starts the real authority in-process on loopback; if it cannot start, the simulated
    /// lease source (and says why).
    pub async fn start(dir: &Path, budget: Budget) -> anyhow::Result<Backend> {
        match Self::start_real(dir, budget).await {
            Ok(b) => Ok(b),
            Err(e) => {
                println!(
                    "the authority could not start ({e:#}); falling back to a SIMULATED lease source"
                );
                Self::start_local(budget).await
            }
        }
    }

    async fn start_real(dir: &Path, budget: Budget) -> anyhow::Result<Backend> {
        let key_path = dir.join("authority.key");
        tollgate_authority::keys::generate(&key_path, true)?;
        let seed = std::fs::read_to_string(&key_path)?;
        let config = AuthorityConfig {
            admin_token: Some(ADMIN_TOKEN.into()),
            sidecars: ["pod-a", "pod-b"]
                .iter()
                .map(|p| SidecarCredential {
                    name: (*p).into(),
                    token: Some(format!("{p}-token")),
                    token_file: None,
                    tenants: vec![TENANT.into()],
                })
                .collect(),
            leases: LeaseConfig {
                // A fresh store has nothing to relearn.
                relearn_grace_secs: 0,
                ..LeaseConfig::default()
            },
            ..AuthorityConfig::default()
        };
        config.validate()?;
        let store = format!("sqlite://{}", dir.join("authority.db").display());
        let authority = tollgate_authority::server::start(ServeOptions {
            store: store.clone(),
            listen: "127.0.0.1:0".parse()?,
            http: None,
            config,
            signer_seed_hex: seed.trim().to_string(),
        })
        .await?;
        let ch =
            tonic::transport::Endpoint::from_shared(format!("http://{}", authority.grpc_addr))?
                .connect()
                .await?;
        let mut admin = AdminServiceClient::new(ch);
        setup::tenant(&mut admin, ADMIN_TOKEN, TENANT, budget, now_ms()).await?;
        Ok(Backend::Real {
            authority: Box::new(authority),
            admin,
            store,
            budget,
        })
    }

    async fn start_local(budget: Budget) -> anyhow::Result<Backend> {
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
            Backend::Real {
                authority, store, ..
            } => format!(
                "authority: gRPC on {} , embedded store {store}",
                authority.grpc_addr
            ),
            Backend::Local { addr, .. } => format!(
                "authority: SIMULATED in-memory lease source on {addr} (the real authority is not available in this build: \
                 no ledger, no grant order, no audit chain; money is tracked in memory only)"
            ),
        }
    }

    /// The URL sidecars connect to.
    pub fn url(&self) -> String {
        match self {
            Backend::Real { authority, .. } => format!("http://{}", authority.grpc_addr),
            Backend::Local { addr, .. } => format!("http://{addr}"),
        }
    }

    /// The tenant's balance now.
    pub async fn balance(&self) -> BalanceView {
        match self {
            Backend::Real { admin, budget, .. } => {
                let mut admin = admin.clone();
                match admin
                    .get_balance(authed(GetBalanceRequest {
                        tenant: TENANT.into(),
                    }))
                    .await
                {
                    Ok(b) => {
                        let b = b.into_inner();
                        BalanceView {
                            spendable: b.available_micro,
                            phase: phase(b.consumed_micro, budget),
                        }
                    }
                    Err(e) => BalanceView {
                        spendable: 0,
                        phase: format!("balance unavailable: {}", e.message()),
                    },
                }
            }
            Backend::Local { source, budget, .. } => {
                let t = source.totals();
                BalanceView {
                    spendable: source.left(),
                    phase: phase(t.posted, budget),
                }
            }
        }
    }

    /// Prints the statement and the checks; `fleet` is what the agents committed, to
    /// reconcile with what was posted.
    pub async fn finish(&self, fleet: FleetTotals) -> anyhow::Result<String> {
        let (fleet_spent, fleet_calls) = (fleet.spent, fleet.paid_calls);
        let mut out = String::new();
        match self {
            Backend::Real { admin, .. } => {
                let mut admin = admin.clone();
                real_report(&mut admin, &mut out, fleet).await?;
            }
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

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn authed<T>(msg: T) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    if let Ok(v) = format!("Bearer {ADMIN_TOKEN}").parse() {
        r.metadata_mut().insert(tollgate_proto::AUTHORIZATION, v);
    }
    r
}

/// What the fleet's agents committed, as they counted it.
#[derive(Debug, Clone, Copy)]
pub struct FleetTotals {
    /// Credits committed (micro-credits).
    pub spent: u64,
    /// Calls that cost something.
    pub paid_calls: u64,
    /// Committed calls that cost nothing (agent-initiated calls on free request prices).
    pub free_calls: u64,
}

/// Tasks listed by name in the statement: the most expensive ones (and the runaway's).
const TASKS_SHOWN: usize = 5;

async fn real_report(
    admin: &mut AdminServiceClient<Channel>,
    out: &mut String,
    fleet: FleetTotals,
) -> anyhow::Result<()> {
    let grants = admin
        .list_grants(authed(ListGrantsRequest {
            tenant: TENANT.into(),
        }))
        .await?
        .into_inner()
        .grants;
    let label = |key: &str| -> String {
        let id = key.trim_start_matches("grant#");
        grants
            .iter()
            .find(|g| g.grant_id == id)
            .map(|g| format!("{} ({})", g.label, key))
            .unwrap_or_else(|| key.to_string())
    };
    let s = admin
        .get_statement(authed(GetStatementRequest {
            tenant: TENANT.into(),
            from_unix_ms: 0,
            to_unix_ms: 0,
        }))
        .await?
        .into_inner();
    let b = admin
        .get_balance(authed(GetBalanceRequest {
            tenant: TENANT.into(),
        }))
        .await?
        .into_inner();
    let cur = s.currency.clone();
    // Credits, with the tenant's currency beside them when it buys credits in packs.
    let amount = |credits: u64, money_micro: u64| -> String {
        if cur.is_empty() {
            format!("{:>10} cr", cr(credits))
        } else {
            format!("{:>10} cr {:>12}", cr(credits), money(money_micro, &cur))
        }
    };
    writeln!(
        out,
        "\n== Statement for {TENANT} (from the authority's ledger) =="
    )?;
    writeln!(
        out,
        "  total {} in {} calls; {} outcomes, {} agentic work units (completed tasks)",
        amount(s.total_micro, s.total_money_micro).trim(),
        s.calls,
        s.outcomes,
        s.work_units
    )?;
    writeln!(
        out,
        "  by grant (deduction order: trial, then purchased, then plan overage):"
    )?;
    for l in &s.by_grant {
        writeln!(
            out,
            "    {:<34} {:>7} calls {}",
            label(&l.key),
            l.calls,
            amount(l.amount_micro, l.amount_money_micro)
        )?;
    }
    writeln!(out, "  by model:")?;
    for l in s.by_model.iter().filter(|l| !l.key.is_empty()) {
        writeln!(
            out,
            "    {:<34} {:>7} calls {}",
            l.key,
            l.calls,
            amount(l.amount_micro, l.amount_money_micro)
        )?;
    }
    writeln!(
        out,
        "  by agent (its name; pods, processes and lanes are the instance detail):"
    )?;
    for l in &s.by_agent {
        let per_awu = if l.work_units > 0 {
            format!("{} cr per AWU", cr(l.credits_per_work_unit_micro))
        } else {
            "no AWU".to_string()
        };
        writeln!(
            out,
            "    {:<20} {:>7} calls {} {:>5} outcomes {:>5} AWUs  {per_awu}",
            if l.key.is_empty() {
                "(unnamed)"
            } else {
                &l.key
            },
            l.calls,
            amount(l.amount_micro, l.amount_money_micro),
            l.outcomes,
            l.work_units
        )?;
    }
    let mut tasks: Vec<&StatementLine> = s.by_task.iter().filter(|l| !l.key.is_empty()).collect();
    tasks.sort_by(|a, b| b.amount_micro.cmp(&a.amount_micro).then(a.key.cmp(&b.key)));
    writeln!(
        out,
        "  by task ({} tasks; the {TASKS_SHOWN} most expensive, and the runaway loop's):",
        tasks.len()
    )?;
    let runaway = crate::fleet::RUNAWAY_TASK;
    for l in tasks
        .iter()
        .enumerate()
        .filter(|(i, l)| *i < TASKS_SHOWN || l.key == runaway)
        .map(|(_, l)| l)
    {
        writeln!(
            out,
            "    {:<20} {:>7} calls {}  {}",
            l.key,
            l.calls,
            amount(l.amount_micro, l.amount_money_micro),
            l.agents
        )?;
    }
    writeln!(
        out,
        "  balance: granted {} cr, consumed {} cr, holds still open {} cr (leases returned at shutdown)",
        cr(b.granted_micro),
        cr(b.consumed_micro),
        cr(b.held_micro)
    )?;
    // The ledger counts the free calls too (a task's completion record is no call).
    let calls_ok = s.calls == fleet.paid_calls + fleet.free_calls && s.total_micro == fleet.spent;
    writeln!(
        out,
        "  reconciliation: agents committed {} cr in {} paid and {} free calls; the ledger posted {} cr in {} calls: {}",
        cr(fleet.spent),
        fleet.paid_calls,
        fleet.free_calls,
        cr(s.total_micro),
        s.calls,
        if calls_ok {
            "every call posted once, to the micro-credit"
        } else {
            "MISMATCH"
        }
    )?;
    // The hard cap bounds the plan's charge (usage past the grants).
    let overage: u64 = s
        .by_grant
        .iter()
        .filter(|l| l.key == "plan")
        .map(|l| l.amount_micro)
        .sum();
    let cap_ok = b.hard_cap_micro == 0 || overage <= b.hard_cap_micro;
    if cap_ok {
        writeln!(
            out,
            "  hard cap respected: yes (overage {} cr of a {} cr cap)",
            cr(overage),
            cr(b.hard_cap_micro)
        )?;
    } else {
        writeln!(
            out,
            "  HARD CAP EXCEEDED: overage {} cr of a {} cr cap (the region totals above show what each sidecar leased)",
            cr(overage),
            cr(b.hard_cap_micro)
        )?;
    }
    let v = admin
        .verify_audit(authed(VerifyAuditRequest {
            tenant: TENANT.into(),
        }))
        .await?
        .into_inner();
    if v.ok {
        writeln!(
            out,
            "  audit chain verified: {} records, hashes and signatures intact",
            v.records_checked
        )?;
    } else {
        writeln!(
            out,
            "  audit chain FAILED at record {} ({}): {}",
            v.bad_seq, v.bad_tenant, v.problem
        )?;
    }
    if !(calls_ok && cap_ok && v.ok) {
        anyhow::bail!("{out}\nthe demo's checks failed");
    }
    Ok(())
}

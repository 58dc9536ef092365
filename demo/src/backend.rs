//! What the sidecars talk to: the real authority on the embedded store, in-process on
//! loopback, with its HTTP port (the admin API and the dashboard at `/ui`). There is no
//! fallback: if the authority cannot start, the demo says why and fails.

use std::fmt::Write;

use anyhow::Context;
use std::net::SocketAddr;
use std::path::Path;

use tollgate_authority::config::{Config as AuthorityConfig, LeaseConfig, SidecarCredential};
use tollgate_authority::server::{Running as Authority, ServeOptions};
use tollgate_proto::v1::admin_service_client::AdminServiceClient;
use tollgate_proto::v1::{
    GetBalanceRequest, GetStatementRequest, ListGrantsRequest, StatementLine, VerifyAuditRequest,
};
use tonic::transport::Channel;

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

/// The authority the demo runs against: the real one on the embedded SQLite store,
/// in-process on loopback.
#[derive(Debug)]
pub struct Backend {
    /// The running authority.
    authority: Box<Authority>,
    /// An admin client.
    admin: AdminServiceClient<Channel>,
    /// Where the store lives.
    store: String,
    /// The tenant's budget.
    budget: Budget,
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
    /// Starts the real authority in-process, its gRPC port on loopback and its HTTP port
    /// (admin API, dashboard) on `http`; if that port is taken, on a free one. An
    /// authority that cannot start is an error that says why: there is no fallback.
    pub async fn start(dir: &Path, budget: Budget, http: SocketAddr) -> anyhow::Result<Backend> {
        match Self::start_real(dir, budget, http).await {
            Err(e) if http.port() != 0 && port_in_use(&e) => {
                println!(
                    "port {} is in use: the dashboard takes a free port",
                    http.port()
                );
                let mut any = http;
                any.set_port(0);
                Self::start_real(dir, budget, any).await
            }
            r => r,
        }
        .context("the authority could not start")
    }

    async fn start_real(dir: &Path, budget: Budget, http: SocketAddr) -> anyhow::Result<Backend> {
        let key_path = dir.join("authority.key");
        tollgate_authority::keys::generate(&key_path, true)?;
        // A retry (the HTTP port was taken) starts over on a fresh store.
        let _ = std::fs::remove_file(dir.join("authority.db"));
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
            http: Some(http),
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
        Ok(Backend {
            authority: Box::new(authority),
            admin,
            store,
            budget,
        })
    }

    /// One line saying what runs.
    pub fn describe(&self) -> String {
        format!(
            "authority: gRPC on {} , embedded store {}",
            self.authority.grpc_addr, self.store
        )
    }

    /// The URL sidecars connect to.
    pub fn url(&self) -> String {
        format!("http://{}", self.authority.grpc_addr)
    }

    /// The dashboard's URL (sign in with [`ADMIN_TOKEN`]).
    pub fn dashboard_url(&self) -> Option<String> {
        self.authority.http_addr.map(|a| format!("http://{a}/ui"))
    }

    /// Serves until Ctrl-C (`--keep`): the sidecars and the fleet have stopped; the
    /// authority, its API and its dashboard stay up.
    pub async fn keep_serving(self) -> anyhow::Result<()> {
        tokio::signal::ctrl_c().await?;
        self.authority.shutdown().await?;
        Ok(())
    }

    /// The tenant's balance now.
    pub async fn balance(&self) -> BalanceView {
        let mut admin = self.admin.clone();
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
                    phase: phase(b.consumed_micro, &self.budget),
                }
            }
            Err(e) => BalanceView {
                spendable: 0,
                phase: format!("balance unavailable: {}", e.message()),
            },
        }
    }

    /// Prints the statement and the checks; `fleet` is what the agents committed, to
    /// reconcile with what was posted.
    pub async fn finish(&self, fleet: FleetTotals) -> anyhow::Result<String> {
        let mut out = String::new();
        let mut admin = self.admin.clone();
        real_report(&mut admin, &mut out, fleet).await?;
        Ok(out)
    }
}

/// True if `e` is a listener that could not bind because its port is taken.
fn port_in_use(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        matches!(
            c.downcast_ref::<tollgate_authority::server::ServeError>(),
            Some(tollgate_authority::server::ServeError::Bind { source, .. })
                if source.kind() == std::io::ErrorKind::AddrInUse
        )
    })
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

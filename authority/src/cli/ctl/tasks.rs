//! `ctl task`: a tenant's tasks (budget, calls, spend, whether they are closed) and
//! `ctl denials`: calls sidecars reported denied, by limit and tier.

use std::fmt::Write;

use clap::{Args, Subcommand};
use tollgate_proto::v1 as pb;

use super::connect::{Admin, status};
use super::units::{parse_time, put_table, show, show_cap, show_ms, table};

/// Task commands.
#[derive(Debug, Subcommand)]
pub enum TaskCmd {
    /// List a tenant's tasks, most recently active first.
    List {
        /// Tenant id.
        tenant: String,
        /// Most tasks shown.
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
}

/// `ctl denials` arguments.
#[derive(Debug, Args)]
pub struct DenialsArgs {
    /// Tenant id.
    pub tenant: String,
    /// Count from (YYYY-MM-DD or unix seconds). Default: the last hour.
    #[arg(long)]
    pub since: Option<String>,
}

/// Runs a task command.
pub async fn run(cmd: TaskCmd, a: &mut Admin, out: &mut String) -> anyhow::Result<()> {
    let TaskCmd::List { tenant, limit } = cmd;
    let r = a
        .client
        .list_tasks(a.req(pb::ListTasksRequest { tenant, limit }))
        .await
        .map_err(status)?
        .into_inner();
    let mut t = table(
        &[
            "task",
            "budget",
            "spent",
            "calls",
            "max calls",
            "AWU",
            "state",
            "last",
        ],
        &[1, 2, 3, 4, 5],
    );
    for k in &r.tasks {
        let state = match (k.closed.as_str(), k.budget_micro) {
            ("", 0) => "unregistered".to_string(),
            ("", _) => "open".to_string(),
            (why, _) => format!("closed ({why})"),
        };
        let state = if k.conflicts > 0 {
            format!("{state}, {} conflicting registration(s)", k.conflicts)
        } else {
            state
        };
        t.add_row(vec![
            k.task.clone(),
            show_cap(k.budget_micro),
            show(k.spent_micro),
            k.calls.to_string(),
            if k.max_calls == 0 {
                "-".into()
            } else {
                k.max_calls.to_string()
            },
            k.work_units.to_string(),
            state,
            show_ms(k.last_unix_ms),
        ]);
    }
    put_table(out, &t);
    Ok(())
}

/// Prints the denials per limit and tier.
pub async fn denials(cmd: DenialsArgs, a: &mut Admin, out: &mut String) -> anyhow::Result<()> {
    let since_unix_ms = cmd
        .since
        .map(|s| parse_time("--since", &s))
        .transpose()?
        .unwrap_or(0);
    let r = a
        .client
        .recent_denials(a.req(pb::RecentDenialsRequest {
            tenant: cmd.tenant,
            since_unix_ms,
        }))
        .await
        .map_err(status)?
        .into_inner();
    writeln!(
        out,
        "calls denied to {}'s agents since {}:",
        r.tenant,
        show_ms(r.since_unix_ms)
    )?;
    let mut t = table(&["limit", "tier", "denied", "last minute"], &[2]);
    for d in &r.totals {
        let tier = pb::Tier::try_from(d.tier)
            .map(|t| t.as_str_name().trim_start_matches("TIER_").to_lowercase())
            .unwrap_or_else(|_| d.tier.to_string());
        t.add_row(vec![
            d.limit_key.clone(),
            tier,
            d.count.to_string(),
            show_ms(d.last_minute_unix_ms),
        ]);
    }
    put_table(out, &t);
    Ok(())
}

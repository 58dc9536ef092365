//! `ctl balance` and `ctl statement`: what a tenant has, burns and spent.

use std::fmt::Write;

use clap::Args;
use tollgate_proto::v1 as pb;

use super::connect::{Admin, status};
use super::grants::write_grants;
use super::units::{parse_time, put_table, show, show_cap, show_ms, table};

/// `ctl balance` arguments.
#[derive(Debug, Args)]
pub struct BalanceArgs {
    /// Tenant id.
    pub tenant: String,
}

/// `ctl statement` arguments.
#[derive(Debug, Args)]
pub struct StatementArgs {
    /// Tenant id.
    pub tenant: String,
    /// Start (inclusive): YYYY-MM-DD or unix seconds. Default: the beginning.
    #[arg(long)]
    pub from: Option<String>,
    /// End (exclusive): YYYY-MM-DD or unix seconds. Default: now.
    #[arg(long)]
    pub to: Option<String>,
}

/// Prints the balance, burn rates, projected depletion and grants; `raw`: the message.
pub async fn balance(
    cmd: BalanceArgs,
    raw: bool,
    a: &mut Admin,
    out: &mut String,
) -> anyhow::Result<()> {
    let b = a
        .client
        .get_balance(a.req(pb::GetBalanceRequest { tenant: cmd.tenant }))
        .await
        .map_err(status)?
        .into_inner();
    if raw {
        writeln!(out, "{b:#?}")?;
        return Ok(());
    }
    writeln!(out, "tenant               {}", b.tenant)?;
    writeln!(out, "available            {}", show(b.available_micro))?;
    writeln!(out, "held (leases)        {}", show(b.held_micro))?;
    writeln!(out, "consumed             {}", show(b.consumed_micro))?;
    writeln!(out, "granted              {}", show(b.granted_micro))?;
    writeln!(out, "expired              {}", show(b.expired_micro))?;
    writeln!(out, "spent this month     {}", show(b.period_spent_micro))?;
    writeln!(out, "hard cap             {}", show_cap(b.hard_cap_micro))?;
    writeln!(
        out,
        "burn (last hour)     {}/h",
        show(b.burn_1h_per_hour_micro)
    )?;
    writeln!(
        out,
        "burn (last 24 h)     {}/h",
        show(b.burn_24h_per_hour_micro)
    )?;
    writeln!(
        out,
        "projected depletion  {}",
        show_ms(b.projected_depletion_unix_ms)
    )?;
    writeln!(out)?;
    write_grants(out, &b.grants)
}

/// Prints the statement: the total, then spend by agent, model, feature and grant.
pub async fn statement(cmd: StatementArgs, a: &mut Admin, out: &mut String) -> anyhow::Result<()> {
    let StatementArgs { tenant, from, to } = cmd;
    let from_unix_ms = from
        .map(|s| parse_time("--from", &s))
        .transpose()?
        .unwrap_or(0);
    let to_unix_ms = to.map(|s| parse_time("--to", &s)).transpose()?.unwrap_or(0);
    let s = a
        .client
        .get_statement(a.req(pb::GetStatementRequest {
            tenant,
            from_unix_ms,
            to_unix_ms,
        }))
        .await
        .map_err(status)?
        .into_inner();
    writeln!(
        out,
        "statement of {}: {} credits over {} calls",
        s.tenant,
        show(s.total_micro),
        s.calls
    )?;
    for (title, lines) in [
        ("agent", &s.by_agent),
        ("model", &s.by_model),
        ("feature", &s.by_feature),
        ("grant", &s.by_grant),
    ] {
        writeln!(out, "\nby {title}:")?;
        let mut t = table(
            &[title, "credits", "calls", "input tokens", "output tokens"],
            &[1, 2, 3, 4],
        );
        for l in lines {
            t.add_row(vec![
                l.key.clone(),
                show(l.amount_micro),
                l.calls.to_string(),
                l.input_tokens.to_string(),
                l.output_tokens.to_string(),
            ]);
        }
        put_table(out, &t);
    }
    Ok(())
}

//! `ctl estimate`: "how much will this cost?" A workload of calls per model, per day or in
//! total over some days, rated by the authority against the tenant's price book and run
//! through its wallet and plan in memory (nothing is written).

use std::fmt::Write;

use anyhow::bail;
use clap::Args;
use tollgate_proto::v1 as pb;

use super::connect::{Admin, status};
use super::pack::show_money;
use super::units::{put_table, show, show_ms, table};

/// `ctl estimate` arguments.
#[derive(Debug, Args)]
#[command(after_help = "\
Examples:
  # 2,000 calls a day to gpt-4o (1,200 tokens in, 300 out) and 50 a day to o3, for 30 days
  tollgate ctl estimate acme --line gpt-4o:2000:1200:300 --line o3:50:8000:2000 --days 30
  # 10,000 calls in total over a week, 400 of them resolving a ticket (per-outcome price)
  tollgate ctl estimate acme --line support-bot-model:10000:900:200:400 --total --days 7

Prints each line's credits, the total in credits and (with a credit pack) the tenant's
currency, the grants that would pay in deduction order, what the plan would fund, the first
day a limit (the hard cap or the balance) would stop the workload, and the runway at the
last 24 hours' burn plus the workload.")]
pub struct EstimateArgs {
    /// Tenant id.
    pub tenant: String,
    /// A workload line, repeatable: MODEL:CALLS:INPUT_TOKENS:OUTPUT_TOKENS[:OUTCOMES]
    /// (tokens per call; calls and outcomes per day, or in total with --total).
    #[arg(
        long = "line",
        value_name = "MODEL:CALLS:IN:OUT[:OUTCOMES]",
        required = true
    )]
    pub lines: Vec<String>,
    /// Days the workload runs, from now (1 to 3660).
    #[arg(long, default_value_t = 30)]
    pub days: u32,
    /// The lines' calls and outcomes are totals over --days (default: per day).
    #[arg(long)]
    pub total: bool,
    /// The calls are started by agents on their own, not by people (free under a
    /// per-request price that says so).
    #[arg(long)]
    pub agent_initiated: bool,
    /// Agent name for the lines (shown only; changes no price).
    #[arg(long, default_value = "")]
    pub agent: String,
    /// Feature name for the lines (shown only).
    #[arg(long, default_value = "")]
    pub feature: String,
}

/// Parses `MODEL:CALLS:IN:OUT[:OUTCOMES]`.
pub fn parse_line(s: &str) -> anyhow::Result<pb::WorkloadLine> {
    // The model may itself contain ':' (e.g. `bedrock:claude`): the numbers are the
    // trailing numeric fields, four when there are four (with outcomes), else three.
    let parts: Vec<&str> = s.split(':').collect();
    let num = |x: &str| x.trim().replace('_', "").parse::<u64>().ok();
    let trailing = parts.iter().rev().take_while(|x| num(x).is_some()).count();
    let k = if trailing >= 4 && parts.len() > 4 {
        4
    } else {
        3
    };
    if parts.len() <= k || trailing < 3 {
        bail!(
            "--line {s:?}: give MODEL:CALLS:INPUT_TOKENS:OUTPUT_TOKENS[:OUTCOMES] (whole numbers)"
        );
    }
    let model = parts[..parts.len() - k].join(":");
    let n: Vec<u64> = parts[parts.len() - k..]
        .iter()
        .filter_map(|x| num(x))
        .collect();
    if model.is_empty() {
        bail!("--line {s:?}: the model is empty");
    }
    Ok(pb::WorkloadLine {
        model,
        calls: n[0],
        input_tokens_per_call: n[1],
        output_tokens_per_call: n[2],
        outcomes: n.get(3).copied().unwrap_or(0),
        ..Default::default()
    })
}

fn in_currency(currency: &str, money: u64) -> String {
    if currency.is_empty() {
        String::new()
    } else {
        format!("  ({} {currency})", show_money(money))
    }
}

/// Asks for the estimate and prints it.
pub async fn run(cmd: EstimateArgs, a: &mut Admin, out: &mut String) -> anyhow::Result<()> {
    let mut lines = Vec::with_capacity(cmd.lines.len());
    for l in &cmd.lines {
        let mut line = parse_line(l)?;
        line.agent = cmd.agent.clone();
        line.feature = cmd.feature.clone();
        if cmd.agent_initiated {
            line.initiator = pb::Initiator::Agent as i32;
        }
        lines.push(line);
    }
    let e = a
        .client
        .estimate(a.req(pb::EstimateRequest {
            tenant: cmd.tenant,
            lines,
            per_day: !cmd.total,
            days: cmd.days,
        }))
        .await
        .map_err(status)?
        .into_inner();
    let cur = e.currency.as_str();
    let per = if cmd.total { "in total" } else { "a day" };
    writeln!(
        out,
        "estimate for {} over {} day(s), calls {per} (price book v{}):",
        e.tenant, cmd.days, e.price_book_version
    )?;
    let mut t = table(
        &["model", "calls", "per call", "credits", "note"],
        &[1, 2, 3],
    );
    for l in &e.lines {
        let model = l.line.as_ref().map(|x| x.model.clone()).unwrap_or_default();
        t.add_row(vec![
            model,
            l.calls.to_string(),
            show(l.per_call_micro),
            show(l.credits_micro),
            if l.priced {
                String::new()
            } else {
                "not in the price book: charged at its dearest model".into()
            },
        ]);
    }
    put_table(out, &t);
    writeln!(
        out,
        "total                {}{}",
        show(e.credits_micro),
        in_currency(cur, e.money_micro)
    )?;
    writeln!(
        out,
        "per day (average)    {}",
        show(e.credits_per_day_micro)
    )?;
    if !e.grants.is_empty() {
        writeln!(out, "paid by (deduction order):")?;
        let mut g = table(&["grant", "kind", "label", "pays", "left after"], &[3, 4]);
        for d in &e.grants {
            let kind = pb::GrantKind::try_from(d.kind)
                .map(|k| {
                    k.as_str_name()
                        .trim_start_matches("GRANT_KIND_")
                        .to_lowercase()
                })
                .unwrap_or_else(|_| d.kind.to_string());
            g.add_row(vec![
                d.grant_id.clone(),
                kind,
                d.label.clone(),
                show(d.amount_micro),
                show(d.remaining_after_micro),
            ]);
        }
        put_table(out, &g);
    }
    writeln!(out, "from the plan        {}", show(e.plan_funded_micro))?;
    if e.hits_limit {
        let limit = if e.limit == "hard_cap" {
            "the plan's hard cap"
        } else {
            "the balance"
        };
        writeln!(
            out,
            "stops at             {limit} on day {} ({}); {} credits of it could not be paid (denied)",
            e.limit_day,
            show_ms(e.limit_unix_ms),
            show(e.unfunded_micro)
        )?;
    } else {
        writeln!(
            out,
            "stops at             no limit within {} day(s)",
            cmd.days
        )?;
    }
    let spendable = if e.spendable_unbounded {
        "unbounded (a plan without a hard cap)".to_string()
    } else {
        show(e.spendable_micro)
    };
    writeln!(out, "spendable now        {spendable}")?;
    writeln!(out, "burn, last 24 h      {}", show(e.burn_last_24h_micro))?;
    if e.runway_unbounded {
        writeln!(out, "runway               unbounded")?;
    } else {
        writeln!(
            out,
            "runway               {} day(s) at the current burn plus this workload",
            e.runway_days
        )?;
    }
    Ok(())
}

/// `ctl what-if` arguments.
#[derive(Debug, Args)]
#[command(after_help = "\
Example:
  tollgate ctl what-if acme --price-book new-prices.toml --from 2026-11-01 --to 2026-12-01

Rates the usage recorded in the period under the other book (not installed) and prints, per
agent, model and feature, what it was rated and what the other book would rate it, and the
difference. Rated from each line's recorded totals: exact for per-request and per-outcome
prices, within one micro-credit per call for per-token prices.")]
pub struct WhatIfArgs {
    /// Tenant id.
    pub tenant: String,
    /// The other price book (.toml or .json, as for `price-book set`).
    #[arg(long, value_name = "FILE")]
    pub price_book: std::path::PathBuf,
    /// Start (inclusive): YYYY-MM-DD or unix seconds. Default: the beginning.
    #[arg(long)]
    pub from: Option<String>,
    /// End (exclusive): YYYY-MM-DD or unix seconds. Default: now.
    #[arg(long)]
    pub to: Option<String>,
}

/// A signed difference of two micro-credit amounts, in credits.
fn diff(new: u64, old: u64) -> String {
    if new >= old {
        format!("+{}", show(new - old))
    } else {
        format!("-{}", show(old - new))
    }
}

/// Asks for the what-if and prints it line by line.
pub async fn what_if(cmd: WhatIfArgs, a: &mut Admin, out: &mut String) -> anyhow::Result<()> {
    let spec = super::price_book::read_spec(&cmd.price_book)?;
    let book = tollgate_proto::convert::price_book_to_wire(&cmd.tenant, &spec, 0);
    let from_unix_ms = cmd
        .from
        .map(|s| super::units::parse_time("--from", &s))
        .transpose()?
        .unwrap_or(0);
    let to_unix_ms = cmd
        .to
        .map(|s| super::units::parse_time("--to", &s))
        .transpose()?
        .unwrap_or(0);
    let w = a
        .client
        .what_if(a.req(pb::WhatIfRequest {
            tenant: cmd.tenant,
            from_unix_ms,
            to_unix_ms,
            price_book: Some(book),
        }))
        .await
        .map_err(status)?
        .into_inner();
    writeln!(
        out,
        "what-if for {}: recorded usage under the other price book",
        w.tenant
    )?;
    let mut t = table(
        &[
            "agent",
            "model",
            "feature",
            "calls",
            "recorded",
            "other book",
            "difference",
        ],
        &[3, 4, 5, 6],
    );
    for l in &w.lines {
        let model = if l.priced {
            l.model.clone()
        } else {
            format!("{} (not in the other book: its dearest price)", l.model)
        };
        t.add_row(vec![
            l.agent.clone(),
            model,
            l.feature.clone(),
            l.calls.to_string(),
            show(l.recorded_micro),
            show(l.replayed_micro),
            diff(l.replayed_micro, l.recorded_micro),
        ]);
    }
    put_table(out, &t);
    writeln!(
        out,
        "total: recorded {}{}, other book {}{}, difference {}",
        show(w.recorded_micro),
        in_currency(&w.currency, w.recorded_money_micro),
        show(w.replayed_micro),
        in_currency(&w.currency, w.replayed_money_micro),
        diff(w.replayed_micro, w.recorded_micro)
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_parse() {
        let l = parse_line("gpt-4o:2_000:1200:300").unwrap();
        assert_eq!(
            (
                l.model.as_str(),
                l.calls,
                l.input_tokens_per_call,
                l.output_tokens_per_call,
                l.outcomes
            ),
            ("gpt-4o", 2000, 1200, 300, 0)
        );
        let l = parse_line("bot:10:1:2:3").unwrap();
        assert_eq!((l.model.as_str(), l.outcomes), ("bot", 3));
        let l = parse_line("bedrock:claude:10:1:2").unwrap();
        assert_eq!(
            (l.model.as_str(), l.calls, l.outcomes),
            ("bedrock:claude", 10, 0)
        );
        for bad in ["gpt-4o", "gpt-4o:1:2", ":1:2:3", "m:x:2:3", "m:1:-2:3"] {
            assert!(parse_line(bad).is_err(), "{bad}");
        }
    }
}

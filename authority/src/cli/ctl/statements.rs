//! `ctl balance` and `ctl statement`: what a tenant has, burns and spent, in credits and
//! in its currency, by agent, task, instance, model, feature and source.

use std::fmt::Write;

use clap::Args;
use tollgate_proto::v1 as pb;

use super::connect::{Admin, status};
use super::grants::write_grants;
use super::pack::show_money;
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

/// Prints the balance (in credits and, with a credit pack, the tenant's currency), the
/// overrun, this month's plan bill, burn rates, projected depletion and grants; `raw`:
/// the message.
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
    let cur = b.currency.as_str();
    let m = |money: u64| in_currency(cur, money);
    writeln!(out, "tenant               {}", b.tenant)?;
    if let Some(p) = &b.credit_pack {
        writeln!(
            out,
            "credit pack          {} credits for {} {}",
            show(p.credits_micro),
            show_money(p.price_micro),
            p.currency
        )?;
    }
    writeln!(
        out,
        "available            {}{}",
        show(b.available_micro),
        m(b.available_money_micro)
    )?;
    writeln!(out, "held (leases)        {}", show(b.held_micro))?;
    writeln!(
        out,
        "consumed             {}{}",
        show(b.consumed_micro),
        m(b.consumed_money_micro)
    )?;
    writeln!(out, "granted              {}", show(b.granted_micro))?;
    writeln!(out, "expired              {}", show(b.expired_micro))?;
    writeln!(out, "overrun (not billed) {}", show(b.overrun_micro))?;
    writeln!(
        out,
        "spent this month     {}{}",
        show(b.period_spent_micro),
        m(b.period_spent_money_micro)
    )?;
    writeln!(out, "hard cap             {}", show_cap(b.hard_cap_micro))?;
    if let Some(bill) = &b.period_bill {
        writeln!(
            out,
            "plan bill (month)    {}{}",
            show(bill.charge_micro),
            m(bill.charge_money_micro)
        )?;
    }
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

/// ` (12.50 USD)` after a credit figure, or nothing without a currency.
fn in_currency(currency: &str, money: u64) -> String {
    if currency.is_empty() {
        String::new()
    } else {
        format!("  ({} {currency})", show_money(money))
    }
}

/// Prints the statement: totals, the plan's bill by month, then spend by agent (with
/// AWUs and credits per AWU), task, instance, model, feature and source.
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
    let cur = s.currency.clone();
    writeln!(
        out,
        "statement of {}: {} credits charged{} over {} calls",
        s.tenant,
        show(s.total_micro),
        in_currency(&cur, s.total_money_micro),
        s.calls
    )?;
    writeln!(
        out,
        "overrun (not billed) {}; outcomes {}; agentic work units {}",
        show(s.overrun_micro),
        s.outcomes,
        s.work_units
    )?;
    if !s.plan_bills.is_empty() {
        write_plan_bills(out, &s.plan_bills, &cur)?;
    }
    let named = |k: &str| {
        if k.is_empty() {
            "(unnamed)".to_string()
        } else {
            k.to_string()
        }
    };
    writeln!(out, "\nby agent:")?;
    write_lines(out, "agent", &s.by_agent, &cur, named, true)?;
    if !s.by_task.is_empty() {
        writeln!(out, "\nby task:")?;
        write_lines(out, "task", &s.by_task, &cur, str::to_string, true)?;
        omitted(out, s.tasks_omitted, "tasks")?;
    }
    for (title, lines) in [
        ("model", &s.by_model),
        ("feature", &s.by_feature),
        ("source", &s.by_grant),
    ] {
        writeln!(out, "\nby {title}:")?;
        let label = match title {
            "feature" => |k: &str| {
                if k.is_empty() {
                    "(none)".to_string()
                } else {
                    k.to_string()
                }
            },
            "source" => |k: &str| {
                if k == "plan" {
                    "plan (list price)".to_string()
                } else {
                    k.to_string()
                }
            },
            _ => str::to_string,
        };
        write_lines(out, title, lines, &cur, label, false)?;
    }
    writeln!(out, "\nby agent instance:")?;
    write_lines(out, "instance", &s.by_instance, &cur, str::to_string, false)?;
    omitted(out, s.instances_omitted, "instances")?;
    Ok(())
}

fn omitted(out: &mut String, n: u64, what: &str) -> anyhow::Result<()> {
    if n > 0 {
        writeln!(out, "({n} smaller {what} not shown)")?;
    }
    Ok(())
}

/// The plan's bill per month: seats, what was included, overage, floor, the charge.
fn write_plan_bills(out: &mut String, bills: &[pb::PlanBill], cur: &str) -> anyhow::Result<()> {
    writeln!(out, "\nplan bill (what the plan charges, not list price):")?;
    let money = !cur.is_empty();
    let mut header = vec![
        "month",
        "seats",
        "seat fees",
        "included",
        "overage",
        "requests incl.",
        "requests over",
        "floor top-up",
        "charge",
    ];
    if money {
        header.push(cur);
    }
    header.push("list price");
    let mut t = table(&header, &[1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
    for b in bills {
        let mut month = show_ms(b.month_start_unix_ms)
            .chars()
            .take(7)
            .collect::<String>();
        if b.open {
            month.push_str(" (so far)");
        }
        let mut row = vec![
            month,
            b.seats.to_string(),
            show(b.seat_fees_micro),
            show(b.included_micro),
            show(b.overage_micro),
            requests(b.included_requests_milli),
            requests(b.overage_requests_milli),
            show(b.floor_top_up_micro),
            show(b.charge_micro),
        ];
        if money {
            row.push(show_money(b.charge_money_micro));
        }
        row.push(show(b.list_price_micro));
        t.add_row(row);
    }
    put_table(out, &t);
    Ok(())
}

/// Milli-requests as requests (three decimals only when fractional).
fn requests(milli: u64) -> String {
    if milli.is_multiple_of(1000) {
        (milli / 1000).to_string()
    } else {
        format!("{}.{:03}", milli / 1000, milli % 1000)
    }
}

/// One breakdown as a table; `awu`: with outcomes, AWUs and credits per AWU.
fn write_lines(
    out: &mut String,
    title: &str,
    lines: &[pb::StatementLine],
    cur: &str,
    label: impl Fn(&str) -> String,
    awu: bool,
) -> anyhow::Result<()> {
    let money = !cur.is_empty();
    let mut header = vec![title, "credits"];
    if money {
        header.push(cur);
    }
    header.extend(["calls", "overrun"]);
    if awu {
        header.extend(["outcomes", "AWU", "credits/AWU"]);
    }
    header.extend(["input tokens", "output tokens"]);
    let right: Vec<usize> = (1..header.len()).collect();
    let mut t = table(&header, &right);
    for l in lines {
        let mut row = vec![label(&l.key), show(l.amount_micro)];
        if money {
            row.push(show_money(l.amount_money_micro));
        }
        row.extend([l.calls.to_string(), show(l.overrun_micro)]);
        if awu {
            row.extend([
                l.outcomes.to_string(),
                l.work_units.to_string(),
                if l.work_units == 0 {
                    "-".to_string()
                } else {
                    show(l.credits_per_work_unit_micro)
                },
            ]);
        }
        row.extend([l.input_tokens.to_string(), l.output_tokens.to_string()]);
        t.add_row(row);
    }
    put_table(out, &t);
    Ok(())
}

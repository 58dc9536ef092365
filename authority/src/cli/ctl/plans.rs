//! `ctl plan`: a tenant's included allowance, overage price, floor, hard cap and seats.

use std::fmt::Write;

use clap::Subcommand;
use tollgate_proto::v1 as pb;

use super::connect::{Admin, status};
use super::units::{credits, shadow_mark, show, show_cap};

/// Plan commands.
#[derive(Debug, Subcommand)]
pub enum PlanCmd {
    /// Set a tenant's plan (replaces it). A lower hard cap is pushed to sidecars at once.
    Set {
        /// Tenant id.
        tenant: String,
        /// Metered credits included each month.
        #[arg(long, default_value = "0")]
        included: String,
        /// Requests (at 1x) included each month.
        #[arg(long, default_value_t = 0)]
        included_requests: u64,
        /// Credits per request past the included ones.
        #[arg(long, default_value = "0")]
        overage_request_price: String,
        /// Minimum charge per month, credits.
        #[arg(long, default_value = "0")]
        floor: String,
        /// Hard cap on the monthly usage charge, credits (0 = none; seat fees come on top).
        #[arg(long, default_value = "0")]
        hard_cap: String,
        /// Evaluate and report the cap without enforcing it (metrics
        /// tollgate_authority_shadow_*{rule="hard_cap"} on the authority's /metrics).
        #[arg(long)]
        shadow_cap: bool,
        /// Seats (users licensed): each month bills seats x --seat-price whatever the
        /// usage, and each seat adds its allowance.
        #[arg(long, default_value_t = 0)]
        seats: u64,
        /// Monthly fee per seat, credits.
        #[arg(long, default_value = "0")]
        seat_price: String,
        /// Metered credits each seat includes per month.
        #[arg(long, default_value = "0")]
        included_per_seat: String,
        /// Requests (at 1x) each seat includes per month (e.g. 300 premium requests).
        #[arg(long, default_value_t = 0)]
        included_requests_per_seat: u64,
    },
    /// Show a tenant's plan.
    Get {
        /// Tenant id.
        tenant: String,
    },
}

/// Runs a plan command.
pub async fn run(cmd: PlanCmd, a: &mut Admin, out: &mut String) -> anyhow::Result<()> {
    match cmd {
        PlanCmd::Set {
            tenant,
            included,
            included_requests,
            overage_request_price,
            floor,
            hard_cap,
            shadow_cap,
            seats,
            seat_price,
            included_per_seat,
            included_requests_per_seat,
        } => {
            let p = pb::Plan {
                tenant,
                included_micro: credits("--included", &included)?,
                hard_cap_micro: credits("--hard-cap", &hard_cap)?,
                hard_cap_shadow: shadow_cap,
                included_requests,
                overage_request_price_micro: credits(
                    "--overage-request-price",
                    &overage_request_price,
                )?,
                consumption_floor_micro: credits("--floor", &floor)?,
                seats,
                seat_price_micro: credits("--seat-price", &seat_price)?,
                included_micro_per_seat: credits("--included-per-seat", &included_per_seat)?,
                included_requests_per_seat,
            };
            let p = a
                .client
                .set_plan(a.req(pb::SetPlanRequest { plan: Some(p) }))
                .await
                .map_err(status)?
                .into_inner();
            writeln!(
                out,
                "plan of {} set; hard cap {}{}",
                p.tenant,
                show_cap(p.hard_cap_micro),
                shadow_mark(p.hard_cap_shadow)
            )?;
        }
        PlanCmd::Get { tenant } => {
            let p = a
                .client
                .get_plan(a.req(pb::GetPlanRequest { tenant }))
                .await
                .map_err(status)?
                .into_inner();
            writeln!(out, "tenant              {}", p.tenant)?;
            writeln!(out, "included credits    {}", show(p.included_micro))?;
            writeln!(out, "included requests   {}", p.included_requests)?;
            writeln!(
                out,
                "overage per request {}",
                show(p.overage_request_price_micro)
            )?;
            writeln!(
                out,
                "consumption floor   {}",
                show(p.consumption_floor_micro)
            )?;
            writeln!(
                out,
                "hard cap            {}{}",
                show_cap(p.hard_cap_micro),
                shadow_mark(p.hard_cap_shadow)
            )?;
            if p.seats > 0 {
                writeln!(out, "seats               {}", p.seats)?;
                writeln!(out, "fee per seat        {}", show(p.seat_price_micro))?;
                writeln!(
                    out,
                    "included per seat   {} credits, {} requests",
                    show(p.included_micro_per_seat),
                    p.included_requests_per_seat
                )?;
            }
        }
    }
    Ok(())
}

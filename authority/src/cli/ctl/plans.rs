//! `ctl plan`: a tenant's included allowance, overage price, floor and hard cap.

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
        /// Hard cap on the monthly charge, credits (0 = none).
        #[arg(long, default_value = "0")]
        hard_cap: String,
        /// Evaluate and report the cap without enforcing it (metrics
        /// tollgate_authority_shadow_*{rule="hard_cap"} on the authority's /metrics).
        #[arg(long)]
        shadow_cap: bool,
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
                show(p.hard_cap_micro),
                shadow_mark(p.hard_cap_shadow)
            )?;
        }
    }
    Ok(())
}

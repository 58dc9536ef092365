//! `ctl quota`: quota rules and tier floors, and the policy they make.

use std::fmt::Write;

use clap::{Subcommand, ValueEnum};
use tollgate_proto::v1 as pb;

use super::connect::{Admin, status};
use super::units::{credits, put_table, shadow_mark, show, show_cap, table};

/// Windows.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum WindowArg {
    /// Per minute.
    Minute,
    /// Per hour.
    Hour,
    /// Per calendar month.
    Month,
}

impl From<WindowArg> for pb::Window {
    fn from(w: WindowArg) -> Self {
        match w {
            WindowArg::Minute => pb::Window::Minute,
            WindowArg::Hour => pb::Window::Hour,
            WindowArg::Month => pb::Window::Month,
        }
    }
}

/// Tiers.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum TierArg {
    /// Interactive.
    Interactive,
    /// Scheduler.
    Scheduler,
    /// Background.
    Background,
}

impl From<TierArg> for pb::Tier {
    fn from(t: TierArg) -> Self {
        match t {
            TierArg::Interactive => pb::Tier::Interactive,
            TierArg::Scheduler => pb::Tier::Scheduler,
            TierArg::Background => pb::Tier::Background,
        }
    }
}

/// Quota commands.
#[derive(Debug, Subcommand)]
pub enum QuotaCmd {
    /// Set (or replace) a quota rule; pushed to every sidecar of the tenant at once.
    Set {
        /// Tenant id.
        tenant: String,
        /// Rule id (e.g. per-minute).
        id: String,
        /// Window.
        #[arg(long, value_enum)]
        window: WindowArg,
        /// Most credits per window.
        #[arg(long)]
        max: String,
        /// Limit one agent, by the name its processes set (`TOLLGATE_AGENT`): every
        /// instance of it in every pod together, instead of the whole tenant.
        #[arg(long, conflicts_with = "tier")]
        agent: Option<String>,
        /// Limit one tier instead of the whole tenant.
        #[arg(long, value_enum)]
        tier: Option<TierArg>,
        /// Shadow mode: do not enforce; the authority measures the window's spend against
        /// the maximum (metrics tollgate_authority_shadow_used_micro / _exceeded_total;
        /// tenant-wide rules only).
        #[arg(long)]
        shadow: bool,
    },
    /// Delete a quota rule.
    Delete {
        /// Tenant id.
        tenant: String,
        /// Rule id.
        id: String,
    },
    /// Set a tier's floor: calls of that tier (and lower tiers) may not take a pool below
    /// it, so higher tiers always find budget. Both 0 removes the floor.
    Floor {
        /// Tenant id.
        tenant: String,
        /// The tier.
        #[arg(long, value_enum)]
        tier: TierArg,
        /// Floor in credits of the pool.
        #[arg(long, default_value = "0")]
        credits: String,
        /// Or floor in per-mille of what the pool was filled to (200 = 20%).
        #[arg(long, default_value_t = 0)]
        permille: u32,
        /// Shadow mode.
        #[arg(long)]
        shadow: bool,
    },
    /// Show the tenant's policy (quotas, cap, floors).
    List {
        /// Tenant id.
        tenant: String,
    },
}

/// Runs a quota command.
pub async fn run(cmd: QuotaCmd, a: &mut Admin, out: &mut String) -> anyhow::Result<()> {
    match cmd {
        QuotaCmd::Set {
            tenant,
            id,
            window,
            max,
            agent,
            tier,
            shadow,
        } => {
            let mut limit = pb::LimitKey::tenant_window(tenant, window.into());
            if let Some(agent) = agent {
                limit.scope = pb::Scope::Agent as i32;
                limit.agent = agent;
            } else if let Some(t) = tier {
                limit.scope = pb::Scope::Tier as i32;
                limit.tier = pb::Tier::from(t) as i32;
            }
            let key = limit.canonical();
            a.client
                .set_quota(a.req(pb::SetQuotaRequest {
                    rule: Some(pb::QuotaRule {
                        id: id.clone(),
                        limit: Some(limit),
                        max_micro: credits("--max", &max)?,
                        shadow,
                    }),
                }))
                .await
                .map_err(status)?;
            writeln!(
                out,
                "quota {id} on {key}: at most {max} credits{}",
                shadow_mark(shadow)
            )?;
        }
        QuotaCmd::Delete { tenant, id } => {
            a.client
                .delete_quota(a.req(pb::DeleteQuotaRequest {
                    tenant,
                    rule_id: id.clone(),
                }))
                .await
                .map_err(status)?;
            writeln!(out, "deleted quota {id}")?;
        }
        QuotaCmd::Floor {
            tenant,
            tier,
            credits: amount,
            permille,
            shadow,
        } => {
            let tier = pb::Tier::from(tier);
            a.client
                .set_tier_floor(a.req(pb::SetTierFloorRequest {
                    tenant,
                    floor: Some(pb::TierFloor {
                        tier: tier as i32,
                        floor_micro: credits("--credits", &amount)?,
                        floor_permille: permille,
                        shadow,
                    }),
                }))
                .await
                .map_err(status)?;
            writeln!(out, "floor of tier {} set", tier.as_str_name())?;
        }
        QuotaCmd::List { tenant } => {
            let p = a
                .client
                .get_policy(a.req(pb::GetPolicyRequest { tenant }))
                .await
                .map_err(status)?
                .into_inner();
            writeln!(
                out,
                "policy version {} (price book {})",
                p.version, p.price_book_version
            )?;
            writeln!(
                out,
                "hard cap {}{}",
                show_cap(p.hard_cap_micro),
                shadow_mark(p.hard_cap_shadow)
            )?;
            for f in &p.tier_floors {
                let tier = pb::Tier::try_from(f.tier)
                    .map(|t| t.as_str_name())
                    .unwrap_or("?");
                writeln!(
                    out,
                    "floor {tier}: {} credits / {} permille{}",
                    show(f.floor_micro),
                    f.floor_permille,
                    shadow_mark(f.shadow)
                )?;
            }
            if !p.quotas.is_empty() {
                // The last column marks the rules measured, not enforced.
                let mut t = table(&["quota", "limit", "max", ""], &[2]);
                for q in p.quotas {
                    let key = q
                        .limit
                        .as_ref()
                        .map(pb::LimitKey::canonical)
                        .unwrap_or_default();
                    t.add_row(vec![
                        q.id,
                        key,
                        show(q.max_micro),
                        shadow_mark(q.shadow).trim_start().to_string(),
                    ]);
                }
                put_table(out, &t);
            }
        }
    }
    Ok(())
}

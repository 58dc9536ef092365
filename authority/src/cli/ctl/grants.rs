//! `ctl grant`: add credits to a wallet, buy credit packs, list its grants.

use std::fmt::Write;

use clap::{Subcommand, ValueEnum};
use tollgate_proto::v1 as pb;

use super::connect::{Admin, status};
use super::units::{credits, parse_time, put_table, show, show_ms, table};

/// Grant kinds.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum KindArg {
    /// Trial credits.
    Trial,
    /// Promotional credits.
    Promotional,
    /// Purchased credits.
    Purchased,
    /// A recurring allowance (use with --reset).
    Recurring,
}

impl From<KindArg> for pb::GrantKind {
    fn from(k: KindArg) -> Self {
        match k {
            KindArg::Trial => pb::GrantKind::Trial,
            KindArg::Promotional => pb::GrantKind::Promotional,
            KindArg::Purchased => pb::GrantKind::Purchased,
            KindArg::Recurring => pb::GrantKind::Recurring,
        }
    }
}

/// Reset periods.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ResetArg {
    /// Never.
    None,
    /// Every calendar month, no rollover.
    Monthly,
    /// Every 12 months (an annual pool).
    Annual,
}

impl From<ResetArg> for pb::ResetPeriod {
    fn from(r: ResetArg) -> Self {
        match r {
            ResetArg::None => pb::ResetPeriod::None,
            ResetArg::Monthly => pb::ResetPeriod::Monthly,
            ResetArg::Annual => pb::ResetPeriod::Annual,
        }
    }
}

/// Grant commands.
#[derive(Debug, Subcommand)]
pub enum GrantCmd {
    /// Add credits to a tenant's wallet.
    Add {
        /// Tenant id.
        tenant: String,
        /// Kind of grant.
        #[arg(long, value_enum)]
        kind: KindArg,
        /// Credits (per period for a recurring grant), e.g. 100 or 12.5.
        #[arg(long)]
        amount: String,
        /// Smaller pays first (default order).
        #[arg(long, default_value_t = 100)]
        priority: i32,
        /// First day usable (YYYY-MM-DD or unix seconds). Default: now.
        #[arg(long)]
        starts: Option<String>,
        /// First day no longer usable. Default: never.
        #[arg(long)]
        expires: Option<String>,
        /// Reset period.
        #[arg(long, value_enum, default_value = "none")]
        reset: ResetArg,
        /// Reference (invoice, promotion): the same label with the same terms grants once; with other terms it is refused.
        #[arg(long, default_value = "")]
        label: String,
    },
    /// Buy credit packs at the tenant's pack price (`ctl pack set`): a purchased grant of
    /// whole packs.
    Buy {
        /// Tenant id.
        tenant: String,
        /// Packs bought.
        #[arg(long)]
        packs: u32,
        /// Reference (an invoice number): buying again with the same reference grants once.
        #[arg(long, default_value = "")]
        reference: String,
        /// First day no longer usable. Default: never.
        #[arg(long)]
        expires: Option<String>,
    },
    /// List a tenant's grants (with what is left of each).
    List {
        /// Tenant id.
        tenant: String,
    },
}

/// Runs a grant command.
pub async fn run(cmd: GrantCmd, a: &mut Admin, out: &mut String) -> anyhow::Result<()> {
    match cmd {
        GrantCmd::Add {
            tenant,
            kind,
            amount,
            priority,
            starts,
            expires,
            reset,
            label,
        } => {
            let time = |flag: &str, s: Option<String>| -> anyhow::Result<u64> {
                Ok(s.map(|s| parse_time(flag, &s)).transpose()?.unwrap_or(0))
            };
            let g = pb::Grant {
                tenant,
                kind: pb::GrantKind::from(kind) as i32,
                amount_micro: credits("--amount", &amount)?,
                priority,
                starts_unix_ms: time("--starts", starts)?,
                expires_unix_ms: time("--expires", expires)?,
                reset: pb::ResetPeriod::from(reset) as i32,
                label,
                ..Default::default()
            };
            let g = a
                .client
                .add_grant(a.req(pb::AddGrantRequest { grant: Some(g) }))
                .await
                .map_err(status)?
                .into_inner();
            writeln!(
                out,
                "granted {} credits to {} (grant #{})",
                show(g.amount_micro),
                g.tenant,
                g.grant_id
            )?;
        }
        GrantCmd::Buy {
            tenant,
            packs,
            reference,
            expires,
        } => {
            let expires_unix_ms = expires
                .map(|s| parse_time("--expires", &s))
                .transpose()?
                .unwrap_or(0);
            let g = a
                .client
                .buy_credits(a.req(pb::BuyCreditsRequest {
                    tenant,
                    packs,
                    reference,
                    expires_unix_ms,
                }))
                .await
                .map_err(status)?
                .into_inner();
            writeln!(
                out,
                "bought {packs} pack(s): {} credits granted to {} (grant #{})",
                show(g.amount_micro),
                g.tenant,
                g.grant_id
            )?;
        }
        GrantCmd::List { tenant } => {
            let r = a
                .client
                .list_grants(a.req(pb::ListGrantsRequest { tenant }))
                .await
                .map_err(status)?
                .into_inner();
            write_grants(out, &r.grants)?;
        }
    }
    Ok(())
}

/// The grants as a table, with what is left of each.
pub(super) fn write_grants(out: &mut String, grants: &[pb::Grant]) -> anyhow::Result<()> {
    let mut t = table(
        &[
            "grant",
            "kind",
            "priority",
            "amount",
            "remaining",
            "expires",
            "label",
        ],
        &[0, 2, 3, 4],
    );
    for g in grants {
        let kind = pb::GrantKind::try_from(g.kind)
            .map(|k| {
                k.as_str_name()
                    .trim_start_matches("GRANT_KIND_")
                    .to_lowercase()
            })
            .unwrap_or_default();
        t.add_row(vec![
            g.grant_id.to_string(),
            kind,
            g.priority.to_string(),
            show(g.amount_micro),
            show(g.remaining_micro),
            show_ms(g.expires_unix_ms),
            g.label.clone(),
        ]);
    }
    put_table(out, &t);
    Ok(())
}

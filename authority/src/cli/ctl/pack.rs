//! `ctl pack`: the price of a tenant's credits in its currency (a credit pack, e.g.
//! 100,000 credits for 500 USD), which balances and statements show money in and
//! `ctl grant buy` sells.

use std::fmt::Write;

use anyhow::anyhow;
use clap::Subcommand;
use tollgate_core::Money;
use tollgate_proto::v1 as pb;

use super::connect::{Admin, status};
use super::units::{credits, show};

/// Credit pack commands.
#[derive(Debug, Subcommand)]
pub enum PackCmd {
    /// Set the tenant's credit pack.
    Set {
        /// Tenant id.
        tenant: String,
        /// Credits in one pack, e.g. 100000.
        #[arg(long)]
        credits: String,
        /// The pack's price in the currency, e.g. 500 or 19.99.
        #[arg(long)]
        price: String,
        /// ISO 4217 currency code, e.g. USD.
        #[arg(long, default_value = "USD")]
        currency: String,
    },
    /// Remove the tenant's credit pack (credits only).
    Clear {
        /// Tenant id.
        tenant: String,
    },
}

/// Runs a pack command.
pub async fn run(cmd: PackCmd, a: &mut Admin, out: &mut String) -> anyhow::Result<()> {
    let pack = match cmd {
        PackCmd::Set {
            tenant,
            credits: c,
            price,
            currency,
        } => {
            let price: Money = price
                .parse()
                .map_err(|e| anyhow!("--price {price:?}: {e} (give money like 500 or 19.99)"))?;
            pb::CreditPack {
                tenant,
                credits_micro: credits("--credits", &c)?,
                price_micro: price.micros(),
                currency,
            }
        }
        PackCmd::Clear { tenant } => pb::CreditPack {
            tenant,
            ..Default::default()
        },
    };
    let p = a
        .client
        .set_credit_pack(a.req(pb::SetCreditPackRequest { pack: Some(pack) }))
        .await
        .map_err(status)?
        .into_inner();
    if p.credits_micro == 0 {
        writeln!(out, "{} has no credit pack: credits only", p.tenant)?;
    } else {
        writeln!(
            out,
            "{}: {} credits for {} {}",
            p.tenant,
            show(p.credits_micro),
            show_money(p.price_micro),
            p.currency
        )?;
    }
    Ok(())
}

/// Money in micro-units as currency units with two decimals, rounded up (an invoice
/// never shows less than is charged); whole cents need no more.
pub(super) fn show_money(micro: u64) -> String {
    let cents = Money(micro).to_cents_ceil();
    format!("{}.{:02}", cents / 100, cents % 100)
}

#[cfg(test)]
mod tests {
    #[test]
    fn money_shows_cents_rounded_up() {
        assert_eq!(super::show_money(100_000), "0.10");
        assert_eq!(super::show_money(500_000_000), "500.00");
        assert_eq!(super::show_money(1), "0.01");
        assert_eq!(super::show_money(0), "0.00");
    }
}

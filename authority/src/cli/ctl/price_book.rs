//! `ctl price-book`: install a new version from a file, show the one in force.

use std::fmt::Write;
use std::path::PathBuf;

use anyhow::Context;
use clap::Subcommand;
use tollgate_core::PriceBookSpec;
use tollgate_proto::v1 as pb;

use super::connect::{Admin, status};

/// Price book commands.
#[derive(Debug, Subcommand)]
pub enum PriceBookCmd {
    /// Install a new version from a TOML or JSON file (tollgate-core's PriceBookSpec:
    /// request_price, default_max_output_tokens, [[models]] with name and pricing).
    Set {
        /// Tenant id.
        tenant: String,
        /// The price book file (.toml or .json). Amounts are micro-credits.
        #[arg(long)]
        file: PathBuf,
    },
    /// Show the version in force.
    Get {
        /// Tenant id.
        tenant: String,
    },
}

/// Runs a price book command.
pub async fn run(cmd: PriceBookCmd, a: &mut Admin, out: &mut String) -> anyhow::Result<()> {
    match cmd {
        PriceBookCmd::Set { tenant, file } => {
            let spec = read_spec(&file)?;
            let wire = tollgate_proto::convert::price_book_to_wire(&tenant, &spec, 0);
            let b = a
                .client
                .set_price_book(a.req(pb::SetPriceBookRequest {
                    price_book: Some(wire),
                }))
                .await
                .map_err(status)?
                .into_inner();
            writeln!(
                out,
                "price book version {} of {} is in force ({} models)",
                b.version,
                b.tenant,
                b.models.len()
            )?;
        }
        PriceBookCmd::Get { tenant } => {
            let b = a
                .client
                .get_price_book(a.req(pb::GetPriceBookRequest { tenant, version: 0 }))
                .await
                .map_err(status)?
                .into_inner();
            writeln!(out, "{b:#?}")?;
        }
    }
    Ok(())
}

/// A price book file: JSON if it ends in `.json`, TOML otherwise.
pub(super) fn read_spec(file: &PathBuf) -> anyhow::Result<PriceBookSpec> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    if file.extension().is_some_and(|e| e == "json") {
        serde_json::from_str(&text)
            .with_context(|| format!("{} is not a valid price book (JSON)", file.display()))
    } else {
        toml::from_str(&text)
            .with_context(|| format!("{} is not a valid price book (TOML)", file.display()))
    }
}

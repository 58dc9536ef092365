//! `ctl tenant`: create and list tenants.

use std::fmt::Write;

use clap::{Subcommand, ValueEnum};
use tollgate_proto::v1 as pb;

use super::connect::{Admin, status};
use super::units::{put_table, show_ms, table};

/// Tenant commands.
#[derive(Debug, Subcommand)]
pub enum TenantCmd {
    /// Create a tenant (its wallet starts empty: add grants).
    Create {
        /// Tenant id: 1-128 characters of A-Z a-z 0-9 . _ - :
        tenant: String,
        /// Display name.
        #[arg(long, default_value = "")]
        name: String,
        /// Order in which grants pay.
        #[arg(long, value_enum, default_value = "priority")]
        deduction_order: OrderArg,
    },
    /// List tenants.
    List,
}

/// Deduction orders.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum OrderArg {
    /// Priority, then earliest expiry, then oldest.
    Priority,
    /// Earliest expiry first.
    Expiry,
    /// Oldest grant first.
    Oldest,
}

impl From<OrderArg> for pb::DeductionOrder {
    fn from(o: OrderArg) -> Self {
        match o {
            OrderArg::Priority => pb::DeductionOrder::Default,
            OrderArg::Expiry => pb::DeductionOrder::ExpiryFirst,
            OrderArg::Oldest => pb::DeductionOrder::OldestFirst,
        }
    }
}

/// Runs a tenant command.
pub async fn run(cmd: TenantCmd, a: &mut Admin, out: &mut String) -> anyhow::Result<()> {
    match cmd {
        TenantCmd::Create {
            tenant,
            name,
            deduction_order,
        } => {
            let t = a
                .client
                .create_tenant(a.req(pb::CreateTenantRequest {
                    tenant,
                    display_name: name,
                    deduction_order: pb::DeductionOrder::from(deduction_order) as i32,
                }))
                .await
                .map_err(status)?
                .into_inner();
            writeln!(out, "created tenant {}", t.tenant)?;
        }
        TenantCmd::List => {
            let r = a
                .client
                .list_tenants(a.req(pb::ListTenantsRequest {}))
                .await
                .map_err(status)?
                .into_inner();
            let mut t = table(&["tenant", "name", "created"], &[]);
            for tenant in r.tenants {
                t.add_row(vec![
                    tenant.tenant,
                    tenant.display_name,
                    show_ms(tenant.created_unix_ms),
                ]);
            }
            put_table(out, &t);
        }
    }
    Ok(())
}

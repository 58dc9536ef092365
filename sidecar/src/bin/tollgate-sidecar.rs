//! `tollgate-sidecar`: the sidecar alone, with the same flags and environment as
//! `tollgate sidecar`. It links only the sidecar's dependencies (no authority, ledger, SQL
//! or webhook code), so its resident code pages are a fraction of the all-in-one binary's;
//! this is the binary the injector puts into pods.

use clap::Parser;

#[derive(Parser)]
#[command(
    name = "tollgate-sidecar",
    version,
    about = "Run the per-pod Tollgate sidecar that owns the shared-memory region and leases budget",
    after_help = "The same flags and environment as `tollgate sidecar`."
)]
struct Cli {
    #[command(flatten)]
    args: tollgate_sidecar::cli::SidecarArgs,
}

fn main() -> anyhow::Result<()> {
    tollgate_sidecar::cli::run(Cli::parse().args)
}

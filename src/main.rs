//! `tollgate`: one binary for every role (demo, authority, sidecar, gateway, injector, ctl).
//! This file only parses the command line and hands over to the crate that does the work.

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "tollgate",
    version,
    about = "Pre-call credit and quota enforcement for AI agent fleets",
    long_about = "Pre-call credit and quota enforcement for AI agent fleets.\n\n\
        Start with `tollgate demo`: the whole system (authority, two sidecars, a simulated \
        fleet) on the embedded store, nothing else to install.",
    after_help = "Run `tollgate <COMMAND> --help` for the options of each role."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the whole system on the embedded store with a simulated fleet, then print the
    /// tenant's statement and verify the audit chain.
    Demo(tollgate_demo::cli::DemoArgs),
    /// Run the central authority (ledger, leases, audit) or generate its audit signing key.
    Authority(tollgate_authority::cli::AuthorityArgs),
    /// Administer tenants, grants, price books, plans, quotas, alerts; read balances and
    /// statements; export and verify the audit chain.
    Ctl(tollgate_authority::cli::CtlArgs),
    /// Run the per-pod sidecar that owns the shared-memory region and leases budget.
    Sidecar(tollgate_sidecar::cli::SidecarArgs),
    /// Run the OpenAI- and Anthropic-compatible HTTP gateway in the pod: every call is
    /// reserved in the region before it is forwarded and committed with the reported usage.
    Gateway(tollgate_gateway::cli::GatewayArgs),
    /// Run the Kubernetes mutating admission webhook that injects the sidecar.
    Injector(tollgate_injector::cli::InjectorArgs),
}

fn main() -> std::process::ExitCode {
    let result = match Cli::parse().command {
        Command::Demo(args) => tollgate_demo::cli::run(args),
        Command::Authority(args) => tollgate_authority::cli::run_authority(args),
        Command::Ctl(args) => tollgate_authority::cli::run_ctl(args),
        Command::Sidecar(args) => tollgate_sidecar::cli::run(args),
        Command::Gateway(args) => tollgate_gateway::cli::run(args),
        Command::Injector(args) => tollgate_injector::cli::run(args),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // The message and its causes, one line; no backtrace for a user's error even
            // with RUST_BACKTRACE set (bugs panic, and panics keep theirs).
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

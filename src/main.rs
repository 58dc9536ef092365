//! `tollgate`: one binary for every role (demo, authority, sidecar, injector, ctl).
//! This file only parses the command line and hands over to the crate that does the work.

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "tollgate", version, about = "Pre-call credit and quota enforcement for AI agent fleets")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print the version and the region layout version this build speaks.
    Version,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Version => {
            println!("tollgate {}", env!("CARGO_PKG_VERSION"));
            Ok(())
        }
    }
}

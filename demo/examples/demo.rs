//! Runs `tollgate demo` without the `tollgate` binary: `cargo run -p tollgate-demo --example demo -- --duration 10s`.

use clap::Parser;

#[derive(Parser)]
struct Args {
    #[command(flatten)]
    demo: tollgate_demo::cli::DemoArgs,
}

fn main() -> anyhow::Result<()> {
    tollgate_demo::cli::run(Args::parse().demo)
}

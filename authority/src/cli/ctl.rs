//! placeholder
#[derive(Debug, clap::Args)]
pub struct CtlArgs {}
pub fn run(_a: CtlArgs) -> anyhow::Result<()> {
    Ok(())
}

//! `llm-upstream`: see the crate docs for the flags, controls and formats.

use anyhow::Context as _;
use clap::Parser as _;
use llm_upstream::Config;

fn main() -> anyhow::Result<()> {
    let cfg = Config::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(usize::from(cfg.threads))
        .enable_all()
        .build()
        .context("cannot start the tokio runtime")?;
    rt.block_on(async move {
        let port_file = cfg.port_file.clone();
        let running = llm_upstream::start(cfg)
            .await
            .context("cannot bind the listen address")?;
        println!("llm-upstream listening on {}", running.base_url());
        if let Some(path) = port_file {
            let tmp = path.with_extension("tmp");
            std::fs::write(&tmp, running.addr.port().to_string())
                .and_then(|()| std::fs::rename(&tmp, &path))
                .with_context(|| format!("cannot write the port file {}", path.display()))?;
        }
        wait_for_signal().await;
        Ok(())
    })
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

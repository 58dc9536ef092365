//! `tollgate injector`: runs the webhook server (its flags, [`InjectorArgs`], are in
//! [`crate::config`]).

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;

pub use crate::config::InjectorArgs;
use crate::server::Server;
use crate::tls::{self, ReloadingCert};
use crate::webhook::Injector;

fn init_logging(filter: &str, format: &str) -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .with_context(|| format!("--log {filter:?}"))?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    // try_init: the binary (or a test) may already have installed a subscriber.
    let _ = match format {
        "json" => builder.json().try_init(),
        "text" => builder.try_init(),
        other => anyhow::bail!("--log-format {other:?}: expected text or json"),
    };
    Ok(())
}

/// Runs the injector until SIGTERM or Ctrl-C.
pub fn run(args: InjectorArgs) -> anyhow::Result<()> {
    init_logging(&args.log, &args.log_format)?;
    let config = args.config()?;
    let cert = Arc::new(ReloadingCert::load(&args.tls_cert, &args.tls_key)?);
    let tls = tls::server_config(cert.clone())?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the tokio runtime")?;
    runtime.block_on(async move {
        let injector = Injector::new(config.clone());
        let metrics = injector.metrics().clone();
        let server = Server::bind(args.listen, tls, injector).await?;
        tracing::info!(
            addr = %server.local_addr()?,
            sidecar_image = %config.defaults.image,
            authority = %config.defaults.authority,
            "tollgate injector serving POST /mutate, GET /healthz and GET /metrics over HTTPS"
        );
        if args.tls_reload_secs > 0 {
            let period = Duration::from_secs(args.tls_reload_secs);
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(period);
                tick.tick().await;
                loop {
                    tick.tick().await;
                    match cert.reload() {
                        Ok(true) => {
                            metrics.cert_reload(true);
                            tracing::info!("TLS certificate reloaded");
                        }
                        Ok(false) => {}
                        Err(e) => {
                            metrics.cert_reload(false);
                            tracing::warn!(error = %e, "TLS certificate reload failed; serving the previous one");
                        }
                    }
                }
            });
        }
        server.run(shutdown_signal()).await?;
        tracing::info!("tollgate injector stopped");
        anyhow::Ok(())
    })
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

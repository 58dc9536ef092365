//! `tollgate gateway`: the command line.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use tollgate_client::{AttachError, Gate, GateOptions};

use crate::budget::Budgets;
use crate::config::Config;
use crate::server::Gateway;

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// `tollgate gateway`: an OpenAI- and Anthropic-compatible HTTP gateway in the pod.
#[derive(Debug, Clone, clap::Args)]
#[command(
    long_about = "An OpenAI- and Anthropic-compatible HTTP gateway that runs in the pod beside \
        the sidecar. Agents point OPENAI_BASE_URL / ANTHROPIC_BASE_URL at it and use a gateway \
        key as their API key. Every call (POST /v1/chat/completions, POST /v1/messages, \
        streamed or not) is reserved in the pod's region before it is forwarded to the \
        model's upstream, and committed with the usage the provider reports. Denials are \
        HTTP 429 with Retry-After in the provider's error format. See docs/gateway.md."
)]
pub struct GatewayArgs {
    /// The TOML configuration: upstreams per model and gateway keys (see docs/gateway.md).
    #[arg(long, env = "TOLLGATE_GATEWAY_CONFIG")]
    pub config: PathBuf,
    /// The pod's region file, created by the sidecar.
    #[arg(
        long,
        env = "TOLLGATE_REGION",
        default_value = "/var/run/tollgate/region"
    )]
    pub region: PathBuf,
    /// Address to serve on (port 0: any free port; see --port-file).
    #[arg(
        long,
        env = "TOLLGATE_GATEWAY_LISTEN",
        default_value = "127.0.0.1:8787"
    )]
    pub listen: SocketAddr,
    /// Write the bound port to this file once serving (written whole, then renamed).
    #[arg(long)]
    pub port_file: Option<PathBuf>,
    /// The agent name calls are attributed to when a key names none.
    #[arg(long, env = "TOLLGATE_AGENT", default_value = "gateway")]
    pub agent: String,
    /// The sidecar's metrics URL, read for the budget headers (the pod's remaining
    /// credits per tenant); empty: no budget headers.
    #[arg(long, env = "TOLLGATE_GATEWAY_SIDECAR_METRICS", default_value = "")]
    pub sidecar_metrics: String,
    /// How often the sidecar's metrics are read.
    #[arg(long, default_value_t = 500)]
    pub metrics_interval_ms: u64,
    /// How long a call may wait for the sidecar to top up a dry lane (a new tenant, tier
    /// or agent name's first call, a refill in flight) before it is refused.
    #[arg(long, default_value_t = 2000)]
    pub reserve_wait_ms: u64,
    /// How long to wait at start for the sidecar to create the region.
    #[arg(long, default_value_t = 60)]
    pub attach_timeout_secs: u64,
    /// Worker threads, each serving its own listener on the port (each reserves on lanes of
    /// its own: a call stays on one thread from reserve to commit).
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub threads: u16,
    /// Log filter (a level like `info`, or directives like `tollgate_gateway=debug,warn`).
    #[arg(long, env = "TOLLGATE_LOG", default_value = "info")]
    pub log: String,
    /// Log format.
    #[arg(long, value_enum, default_value = "text")]
    pub log_format: LogFormat,
}

/// Runs the gateway until SIGTERM or Ctrl-C: `--threads` workers, each a single-threaded
/// runtime with its own listener on the same port (`SO_REUSEPORT`), so each call stays on
/// one thread from reserve to commit (see [`Gateway`]).
pub fn run(args: GatewayArgs) -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_new(&args.log)
        .with_context(|| format!("bad log filter {:?}", args.log))?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match args.log_format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
    let cfg = Config::load(&args.config)?;
    let gate = attach(&args)?;
    let budgets = Arc::new(Budgets::default());
    let gw = Gateway::new(
        gate,
        cfg,
        budgets.clone(),
        Duration::from_millis(args.reserve_wait_ms),
    )?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut workers = Vec::new();
    let mut addr = args.listen;
    for i in 0..args.threads {
        let gw = gw.worker()?;
        let stop = stop_rx.clone();
        let (bound_tx, bound_rx) = std::sync::mpsc::channel();
        workers.push(
            std::thread::Builder::new()
                .name(format!("gateway-{i}"))
                .spawn(move || worker(gw, addr, stop, bound_tx))
                .context("cannot start a worker thread")?,
        );
        // The first worker binds the address asked for (maybe port 0); the others the
        // port it got.
        addr = bound_rx
            .recv()
            .context("a worker exited before listening")??;
    }
    println!("tollgate gateway listening on http://{addr}");
    tracing::info!(%addr, region = %args.region.display(), threads = args.threads, "gateway serving");
    if let Some(path) = &args.port_file {
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, addr.port().to_string())
            .and_then(|()| std::fs::rename(&tmp, path))
            .with_context(|| format!("cannot write the port file {}", path.display()))?;
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the tokio runtime")?;
    rt.block_on(async {
        if !args.sidecar_metrics.is_empty() {
            let http = gw.http().clone();
            let url = args.sidecar_metrics.clone();
            let every = Duration::from_millis(args.metrics_interval_ms.max(10));
            tokio::spawn(async move {
                loop {
                    match http.get(&url).send().await {
                        Ok(r) => match r.text().await {
                            Ok(t) => budgets.update(&t),
                            Err(e) => tracing::debug!(error = %e, "sidecar metrics unreadable"),
                        },
                        Err(e) => tracing::debug!(error = %e, "sidecar metrics unreachable"),
                    }
                    tokio::time::sleep(every).await;
                }
            });
        }
        if let Some(d) = gw.degrade().cloned() {
            let tenants: std::collections::BTreeSet<String> = gw
                .config()
                .keys
                .values()
                .filter(|k| d.tiers.contains(&k.tier))
                .map(|k| k.tenant.clone())
                .collect();
            let budgets = gw.budgets().clone();
            tokio::spawn(crate::degrade::poll(d, tenants, budgets));
        }
        shutdown().await;
    });
    let _ = stop_tx.send(true);
    for w in workers {
        match w.join() {
            Ok(r) => r?,
            Err(_) => anyhow::bail!("a worker thread panicked"),
        }
    }
    Ok(())
}

fn attach(args: &GatewayArgs) -> anyhow::Result<Gate> {
    let deadline = Instant::now() + Duration::from_secs(args.attach_timeout_secs);
    let opts = GateOptions::new().agent(args.agent.clone());
    loop {
        match Gate::attach_with(&args.region, &opts) {
            Ok(g) => return Ok(g),
            Err(e @ (AttachError::NotFound { .. } | AttachError::Unfinished))
                if Instant::now() < deadline =>
            {
                tracing::debug!(error = %e, "waiting for the region");
                std::thread::sleep(Duration::from_millis(100));
            }
            Err(e) => return Err(e).context("cannot attach to the region"),
        }
    }
}

/// One worker: a single-threaded runtime serving its own listener until `stop`; in-flight
/// calls finish (and commit) before it returns.
fn worker(
    gw: Gateway,
    addr: SocketAddr,
    mut stop: tokio::sync::watch::Receiver<bool>,
    bound: std::sync::mpsc::Sender<anyhow::Result<SocketAddr>>,
) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the tokio runtime")?;
    rt.block_on(async move {
        let listener = match listen(addr) {
            Ok(l) => l,
            Err(e) => {
                let msg = format!("{e:#}");
                let _ = bound.send(Err(e));
                anyhow::bail!(msg);
            }
        };
        let _ = bound.send(listener.local_addr().map_err(Into::into));
        Arc::new(gw)
            .serve(listener, async move {
                let _ = stop.wait_for(|s| *s).await;
            })
            .await
            .context("the server failed")
    })
}

fn listen(addr: SocketAddr) -> anyhow::Result<tokio::net::TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()
    } else {
        tokio::net::TcpSocket::new_v6()
    }?;
    socket.set_reuseaddr(true)?;
    socket.set_reuseport(true)?;
    socket
        .bind(addr)
        .with_context(|| format!("cannot bind {addr}"))?;
    Ok(socket.listen(1024)?)
}

async fn shutdown() {
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

//! `tollgate authority`: run the authority server, or generate its signing key.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::{Args, Subcommand};

use crate::config::{Config, TlsConfig};
use crate::server::{ServeOptions, start};

const AFTER_HELP: &str = "\
Examples:
  # Start on the defaults: gRPC :7070, health and metrics on :7071, SQLite in ./tollgate.db.
  # Without a config file no sidecar can connect; the admin token comes from the environment.
  TOLLGATE_ADMIN_TOKEN=change-me tollgate authority

  # With a config file (sidecar credentials, TLS, webhook secret; see `--help` of --config):
  tollgate authority --config /etc/tollgate/authority.toml --store sqlite:///var/lib/tollgate/ledger.db

  # Generate the audit signing key once, and keep it safe:
  tollgate authority keygen --out /etc/tollgate/authority.key

  # PostgreSQL (several replicas may share one database; they must share the signing key):
  tollgate authority migrate --store 'postgres://tollgate@db:5432/tollgate?schema=tollgate'
  tollgate authority --store 'postgres://tollgate@db:5432/tollgate?schema=tollgate' \
      --signing-key /etc/tollgate/authority.key --config /etc/tollgate/authority.toml

Every flag also reads an environment variable (shown in brackets), e.g. TOLLGATE_STORE.
Probe with `curl localhost:7071/healthz`; metrics on `curl localhost:7071/metrics`.";

/// Run the Tollgate authority (the ledger, leases, policy push and audit chain over gRPC).
#[derive(Debug, Args)]
#[command(
    about = "Run the Tollgate authority: credit ledger, leases and audit chain over gRPC",
    long_about = "Run the Tollgate authority: the fleet-wide truth of credits. Sidecars connect \
to it over gRPC (:7070) to lease budget and send usage; `tollgate ctl` talks to its admin \
service. It stores the ledger in SQLite (default) or PostgreSQL (several replicas on one \
database), signs every credit movement into an audit chain, \
pushes cap and quota changes to sidecars, and serves /healthz and /metrics on :7071.",
    after_help = AFTER_HELP,
    args_conflicts_with_subcommands = true
)]
pub struct AuthorityArgs {
    /// What to do (default: serve).
    #[command(subcommand)]
    pub command: Option<AuthorityCommand>,
    /// Server options.
    #[command(flatten)]
    pub serve: ServeArgs,
}

/// Authority subcommands.
#[derive(Debug, Subcommand)]
pub enum AuthorityCommand {
    /// Run the server (the default when no subcommand is given).
    Serve(Box<ServeArgs>),
    /// Generate an ed25519 audit signing key file (hex seed, mode 0600) and print its
    /// public key (give the public key to tenants so they can verify exports).
    Keygen(KeygenArgs),
    /// Apply pending database migrations and exit (serving also applies them at start;
    /// run this first to migrate before rolling out replicas).
    Migrate(MigrateArgs),
}

/// Flags of `tollgate authority migrate`.
#[derive(Debug, Args)]
pub struct MigrateArgs {
    /// The store to migrate: `postgres://USER@HOST:PORT/DB[?schema=NAME]` or `sqlite://PATH`.
    #[arg(long, env = "TOLLGATE_STORE")]
    pub store: String,
}

/// Flags of `tollgate authority keygen`.
#[derive(Debug, Args)]
pub struct KeygenArgs {
    /// Where to write the key.
    #[arg(long, value_name = "FILE", default_value = "tollgate-authority.key")]
    pub out: PathBuf,
    /// Overwrite an existing file (the old key can no longer sign; old records still verify
    /// with its public key).
    #[arg(long)]
    pub force: bool,
}

/// Flags of `tollgate authority [serve]`.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Ledger store: `sqlite://PATH` (created if missing) or
    /// `postgres://USER[:PASSWORD]@HOST:PORT/DB` with optional `?schema=NAME` (created if
    /// missing) and `pool_size=N` (connections, default 16). PostgreSQL needs
    /// --signing-key (replicas share it).
    #[arg(long, env = "TOLLGATE_STORE", default_value = "sqlite://tollgate.db")]
    pub store: String,
    /// gRPC listen address (sidecar and admin services).
    #[arg(long, env = "TOLLGATE_LISTEN", default_value = "0.0.0.0:7070")]
    pub listen: SocketAddr,
    /// HTTP listen address for /healthz, /metrics, the HTTP/JSON admin API
    /// (`POST /v1/admin/<Method>`, `/openapi.json`) and the dashboard (`off` to disable).
    /// Plain HTTP: with [tls] configured the admin API is served only on a loopback address.
    #[arg(long, env = "TOLLGATE_HTTP", default_value = "0.0.0.0:7071")]
    pub http: String,
    /// Config file (TOML): [[sidecars]] credentials scoped to tenants, admin_token,
    /// [tls] cert/key, signing_key, webhook_secret, [leases] timing. See the
    /// `tollgate_authority::config` docs for a complete example.
    #[arg(long, env = "TOLLGATE_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Admin token (overrides the config file's admin_token).
    #[arg(long, env = "TOLLGATE_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// Audit signing key file (overrides the config file). Default: `<store dir>/tollgate-authority.key`,
    /// generated on first start.
    #[arg(long, env = "TOLLGATE_SIGNING_KEY", value_name = "FILE")]
    pub signing_key: Option<PathBuf>,
    /// HMAC-SHA256 secret that signs alert webhooks (overrides the config file).
    #[arg(long, env = "TOLLGATE_WEBHOOK_SECRET", hide_env_values = true)]
    pub webhook_secret: Option<String>,
    /// TLS certificate chain (PEM) for the gRPC listener; needs --tls-key.
    #[arg(
        long,
        env = "TOLLGATE_TLS_CERT",
        value_name = "FILE",
        requires = "tls_key"
    )]
    pub tls_cert: Option<PathBuf>,
    /// TLS private key (PEM); needs --tls-cert.
    #[arg(
        long,
        env = "TOLLGATE_TLS_KEY",
        value_name = "FILE",
        requires = "tls_cert"
    )]
    pub tls_key: Option<PathBuf>,
    /// Log filter (e.g. `info`, `debug`, `tollgate_authority=debug`).
    #[arg(long, env = "TOLLGATE_LOG", default_value = "info")]
    pub log: String,
    /// Log format.
    #[arg(long, env = "TOLLGATE_LOG_FORMAT", default_value = "text", value_parser = ["text", "json"])]
    pub log_format: String,
}

fn store_dir(store: &str) -> PathBuf {
    let path = store
        .strip_prefix("sqlite://")
        .or_else(|| store.strip_prefix("sqlite:"))
        .unwrap_or(store);
    Path::new(path)
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}

/// True for PostgreSQL, false for SQLite; any other scheme is refused with the forms
/// that work.
fn check_store_url(store: &str) -> anyhow::Result<bool> {
    if tollgate_ledger::store::postgres::PostgresStore::is_url(store) {
        return Ok(true);
    }
    if !store.starts_with("sqlite:") && store.contains("://") {
        bail!(
            "--store {:?} is not supported: use sqlite://PATH or postgres://USER@HOST:PORT/DB",
            tollgate_ledger::store::postgres::redact_url(store)
        );
    }
    Ok(false)
}

/// Resolves flags, environment and the config file into server options.
pub fn resolve(a: &ServeArgs) -> anyhow::Result<ServeOptions> {
    let postgres = check_store_url(&a.store)?;
    let mut config = match &a.config {
        Some(p) => Config::load(p)?,
        None => Config::default(),
    };
    if let Some(t) = &a.admin_token {
        config.admin_token = Some(t.clone());
    }
    if let Some(s) = &a.webhook_secret {
        config.webhook_secret = Some(s.clone());
    }
    if let (Some(cert), Some(key)) = (&a.tls_cert, &a.tls_key) {
        config.tls = Some(TlsConfig {
            cert: cert.clone(),
            key: key.clone(),
        });
    }
    config.validate()?;
    if config.admin_token.is_none() {
        tracing::warn!(
            "no admin token configured (TOLLGATE_ADMIN_TOKEN or admin_token): the admin service refuses every call"
        );
    }
    if config.sidecars.is_empty() {
        tracing::warn!("no [[sidecars]] credentials configured: no sidecar can connect");
    }
    let explicit_key = a.signing_key.clone().or_else(|| config.signing_key.clone());
    if postgres && explicit_key.is_none() {
        bail!(
            "a PostgreSQL store needs the audit signing key given (--signing-key FILE, \
             TOLLGATE_SIGNING_KEY or signing_key in the config): every replica must sign \
             with the same key. Make one with `tollgate authority keygen --out FILE`."
        );
    }
    let key_path =
        explicit_key.unwrap_or_else(|| store_dir(&a.store).join("tollgate-authority.key"));
    let signer = if key_path.exists() {
        crate::keys::load(&key_path)?
    } else {
        let s = crate::keys::generate(&key_path, false)?;
        tracing::warn!(path = %key_path.display(), public_key = s.public_key_hex(),
            "generated a new audit signing key: back it up; tenants verify exports with the public key");
        s
    };
    let http = match a.http.as_str() {
        "off" | "" => None,
        s => Some(s.parse::<SocketAddr>().with_context(|| {
            format!("--http {s:?} is not an address like 0.0.0.0:7071 (or `off`)")
        })?),
    };
    Ok(ServeOptions {
        store: a.store.clone(),
        listen: a.listen,
        http,
        config,
        signer_seed_hex: signer.seed_hex(),
    })
}

fn init_logging(filter: &str, format: &str) {
    let f = tracing_subscriber::EnvFilter::try_new(filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let b = tracing_subscriber::fmt()
        .with_env_filter(f)
        .with_writer(std::io::stderr);
    // Another part of the binary may have installed a subscriber already; keep it.
    let _ = if format == "json" {
        b.json().try_init()
    } else {
        b.try_init()
    };
}

/// Runs the server until SIGINT or SIGTERM.
pub async fn serve(a: ServeArgs) -> anyhow::Result<()> {
    let opts = resolve(&a)?;
    let running = start(opts).await?;
    eprintln!(
        "tollgate authority: gRPC on {}, HTTP on {}",
        running.grpc_addr,
        running
            .http_addr
            .map_or_else(|| "off".to_string(), |a| a.to_string())
    );
    let stop = running.shutdown_handle();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutting down");
        let _ = stop.send(true);
    });
    running.wait().await?;
    Ok(())
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
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
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Entry point of `tollgate authority`.
pub fn run(args: AuthorityArgs) -> anyhow::Result<()> {
    match args.command {
        Some(AuthorityCommand::Keygen(k)) => {
            let s = crate::keys::generate(&k.out, k.force)?;
            println!("wrote {}", k.out.display());
            println!("public key: {}", s.public_key_hex());
            Ok(())
        }
        Some(AuthorityCommand::Serve(s)) => run_serve(*s),
        Some(AuthorityCommand::Migrate(m)) => run_migrate(&m),
        None => run_serve(args.serve),
    }
}

fn run_migrate(m: &MigrateArgs) -> anyhow::Result<()> {
    check_store_url(&m.store)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let shown = tollgate_ledger::store::postgres::redact_url(&m.store);
    rt.block_on(async {
        let applied = crate::server::migrate_store(&m.store).await?;
        if applied.is_empty() {
            println!("{shown}: up to date, nothing to apply");
        } else {
            println!("{shown}: applied migrations {applied:?}");
        }
        anyhow::Ok(())
    })
}

fn run_serve(s: ServeArgs) -> anyhow::Result<()> {
    init_logging(&s.log, &s.log_format);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    rt.block_on(serve(s))
}

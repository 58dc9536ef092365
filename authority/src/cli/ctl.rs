//! `tollgate ctl`: the admin command line, a client of the authority's admin service.
//!
//! Amounts are given and shown in credits with up to six decimals (`12.5`, `0.000001`);
//! on the wire they are integer micro-credits. Times are `YYYY-MM-DD` (UTC midnight) or
//! unix seconds.

use std::path::PathBuf;
use std::str::FromStr;

use anyhow::{Context, anyhow, bail};
use clap::{Args, Subcommand, ValueEnum};
use tollgate_core::{CivilDate, Credits, PriceBookSpec};
use tollgate_proto::v1::{self as pb, admin_service_client::AdminServiceClient};
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};

const AFTER_HELP: &str = "\
Examples:
  export TOLLGATE_AUTHORITY=http://127.0.0.1:7070 TOLLGATE_ADMIN_TOKEN=change-me
  tollgate ctl tenant create acme --name \"Acme Corp\"
  tollgate ctl grant add acme --kind trial --amount 100 --expires 2027-01-01
  tollgate ctl grant add acme --kind purchased --amount 5000 --label invoice-42
  tollgate ctl price-book set acme --file prices.toml
  tollgate ctl plan set acme --included 1000 --hard-cap 8000
  tollgate ctl quota set acme per-minute --window minute --max 50
  tollgate ctl alert set acme eighty --percent 80 --webhook https://hooks.example/tollgate
  tollgate ctl balance acme
  tollgate ctl statement acme --from 2026-11-01
  tollgate ctl audit verify --tenant acme
  tollgate ctl audit export --tenant acme --out acme-audit.jsonl
  tollgate ctl audit verify --file acme-audit.jsonl --public-key <hex>

Amounts are credits (up to 6 decimals); dates are YYYY-MM-DD (UTC) or unix seconds.";

/// Administer Tollgate: tenants, credits, prices, plans, quotas, alerts, balances, audit.
#[derive(Debug, Args)]
#[command(
    about = "Administer Tollgate: tenants, grants, price books, plans, quotas, alerts, balance, statements, audit",
    long_about = "Administer Tollgate through the authority's admin service: create tenants, \
grant credits, set price books, plans (hard caps) and quotas (pushed to every sidecar at once), \
alert rules with webhooks, read balances with burn rate and projected depletion, statements, \
and export or verify the signed audit chain (also offline, from an exported file).",
    after_help = AFTER_HELP
)]
pub struct CtlArgs {
    /// Authority gRPC URL.
    #[arg(
        long,
        global = true,
        env = "TOLLGATE_AUTHORITY",
        default_value = "http://127.0.0.1:7070"
    )]
    pub authority: String,
    /// Admin token (or a tenant read token for balance, statement and audit of that tenant).
    #[arg(
        long,
        global = true,
        env = "TOLLGATE_ADMIN_TOKEN",
        hide_env_values = true
    )]
    pub admin_token: Option<String>,
    /// CA certificate (PEM) to trust when the authority URL is https://.
    #[arg(long, global = true, env = "TOLLGATE_CA_CERT", value_name = "FILE")]
    pub ca_cert: Option<PathBuf>,
    /// Print JSON-ish debug output instead of text tables.
    #[arg(long, global = true)]
    pub raw: bool,
    /// The command.
    #[command(subcommand)]
    pub command: CtlCommand,
}

/// `tollgate ctl` commands.
#[derive(Debug, Subcommand)]
pub enum CtlCommand {
    /// Create and list tenants.
    #[command(subcommand)]
    Tenant(TenantCmd),
    /// Grant credits to a tenant's wallet and list its grants.
    #[command(subcommand)]
    Grant(GrantCmd),
    /// Set or show a tenant's price book (versioned; pushed to sidecars).
    #[command(subcommand, name = "price-book")]
    PriceBook(PriceBookCmd),
    /// Set or show a tenant's plan: included allowance, overage price, hard cap.
    #[command(subcommand)]
    Plan(PlanCmd),
    /// Set, delete or list quotas (per minute, hour or month; tenant, agent or tier).
    #[command(subcommand)]
    Quota(QuotaCmd),
    /// Set, delete or list alert rules (budget percent used, projected depletion).
    #[command(subcommand)]
    Alert(AlertCmd),
    /// Show a tenant's balance, burn rate and projected depletion.
    Balance {
        /// Tenant id.
        tenant: String,
    },
    /// Show a tenant's spend by agent, model, feature and grant.
    Statement {
        /// Tenant id.
        tenant: String,
        /// Start (inclusive): YYYY-MM-DD or unix seconds. Default: the beginning.
        #[arg(long)]
        from: Option<String>,
        /// End (exclusive): YYYY-MM-DD or unix seconds. Default: now.
        #[arg(long)]
        to: Option<String>,
    },
    /// Verify or export the signed audit chain.
    #[command(subcommand)]
    Audit(AuditCmd),
}

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

/// Grant kinds.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum KindArg {
    /// Trial credits.
    Trial,
    /// Promotional credits.
    Promotional,
    /// Purchased credits.
    Purchased,
    /// A recurring allowance (use with --reset).
    Recurring,
}

/// Reset periods.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ResetArg {
    /// Never.
    None,
    /// Every calendar month, no rollover.
    Monthly,
    /// Every 12 months (an annual pool).
    Annual,
}

/// Grant commands.
#[derive(Debug, Subcommand)]
pub enum GrantCmd {
    /// Add credits to a tenant's wallet.
    Add {
        /// Tenant id.
        tenant: String,
        /// Kind of grant.
        #[arg(long, value_enum)]
        kind: KindArg,
        /// Credits (per period for a recurring grant), e.g. 100 or 12.5.
        #[arg(long)]
        amount: String,
        /// Smaller pays first (default order).
        #[arg(long, default_value_t = 100)]
        priority: i32,
        /// First day usable (YYYY-MM-DD or unix seconds). Default: now.
        #[arg(long)]
        starts: Option<String>,
        /// First day no longer usable. Default: never.
        #[arg(long)]
        expires: Option<String>,
        /// Reset period.
        #[arg(long, value_enum, default_value = "none")]
        reset: ResetArg,
        /// Reference (invoice, promotion); the same label twice grants once.
        #[arg(long, default_value = "")]
        label: String,
    },
    /// List a tenant's grants (with what is left of each).
    List {
        /// Tenant id.
        tenant: String,
    },
}

/// Price book commands.
#[derive(Debug, Subcommand)]
pub enum PriceBookCmd {
    /// Install a new version from a TOML or JSON file (tollgate-core's PriceBookSpec:
    /// request_price, default_max_output_tokens, [[models]] with name and pricing).
    Set {
        /// Tenant id.
        tenant: String,
        /// The price book file (.toml or .json). Amounts are micro-credits.
        #[arg(long)]
        file: PathBuf,
    },
    /// Show the version in force.
    Get {
        /// Tenant id.
        tenant: String,
    },
}

/// Plan commands.
#[derive(Debug, Subcommand)]
pub enum PlanCmd {
    /// Set a tenant's plan (replaces it). A lower hard cap is pushed to sidecars at once.
    Set {
        /// Tenant id.
        tenant: String,
        /// Metered credits included each month.
        #[arg(long, default_value = "0")]
        included: String,
        /// Requests (at 1x) included each month.
        #[arg(long, default_value_t = 0)]
        included_requests: u64,
        /// Credits per request past the included ones.
        #[arg(long, default_value = "0")]
        overage_request_price: String,
        /// Minimum charge per month, credits.
        #[arg(long, default_value = "0")]
        floor: String,
        /// Hard cap on the monthly charge, credits (0 = none).
        #[arg(long, default_value = "0")]
        hard_cap: String,
        /// Evaluate and report the cap without enforcing it (metrics
        /// tollgate_authority_shadow_*{rule="hard_cap"} on the authority's /metrics).
        #[arg(long)]
        shadow_cap: bool,
    },
    /// Show a tenant's plan.
    Get {
        /// Tenant id.
        tenant: String,
    },
}

/// Windows.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum WindowArg {
    /// Per minute.
    Minute,
    /// Per hour.
    Hour,
    /// Per calendar month.
    Month,
}

/// Tiers.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum TierArg {
    /// Interactive.
    Interactive,
    /// Scheduler.
    Scheduler,
    /// Background.
    Background,
}

/// Quota commands.
#[derive(Debug, Subcommand)]
pub enum QuotaCmd {
    /// Set (or replace) a quota rule; pushed to every sidecar of the tenant at once.
    Set {
        /// Tenant id.
        tenant: String,
        /// Rule id (e.g. per-minute).
        id: String,
        /// Window.
        #[arg(long, value_enum)]
        window: WindowArg,
        /// Most credits per window.
        #[arg(long)]
        max: String,
        /// Limit one agent instance instead of the whole tenant.
        #[arg(long, conflicts_with = "tier")]
        agent: Option<String>,
        /// Limit one tier instead of the whole tenant.
        #[arg(long, value_enum)]
        tier: Option<TierArg>,
        /// Shadow mode: do not enforce; the authority measures the window's spend against
        /// the maximum (metrics tollgate_authority_shadow_used_micro / _exceeded_total;
        /// tenant-wide rules only).
        #[arg(long)]
        shadow: bool,
    },
    /// Delete a quota rule.
    Delete {
        /// Tenant id.
        tenant: String,
        /// Rule id.
        id: String,
    },
    /// Set a tier's floor: calls of that tier (and lower tiers) may not take a pool below
    /// it, so higher tiers always find budget. Both 0 removes the floor.
    Floor {
        /// Tenant id.
        tenant: String,
        /// The tier.
        #[arg(long, value_enum)]
        tier: TierArg,
        /// Floor in credits of the pool.
        #[arg(long, default_value = "0")]
        credits: String,
        /// Or floor in per-mille of what the pool was filled to (200 = 20%).
        #[arg(long, default_value_t = 0)]
        permille: u32,
        /// Shadow mode.
        #[arg(long)]
        shadow: bool,
    },
    /// Show the tenant's policy (quotas, cap, floors).
    List {
        /// Tenant id.
        tenant: String,
    },
}

/// Alert commands.
#[derive(Debug, Subcommand)]
pub enum AlertCmd {
    /// Set (or replace) an alert rule.
    Set {
        /// Tenant id.
        tenant: String,
        /// Rule id.
        id: String,
        /// Fire when this percent of the month's budget is used.
        #[arg(
            long,
            conflicts_with = "depletion_hours",
            required_unless_present = "depletion_hours"
        )]
        percent: Option<u32>,
        /// Fire when depletion is projected within this many hours.
        #[arg(long)]
        depletion_hours: Option<u32>,
        /// Webhook URL that receives the signed JSON POST.
        #[arg(long, default_value = "")]
        webhook: String,
        /// HMAC-SHA256 key for this rule's webhook (default: the authority's global
        /// webhook secret). Write-only: `alert list` shows only that one is set.
        #[arg(long, env = "TOLLGATE_ALERT_WEBHOOK_SECRET", hide_env_values = true)]
        webhook_secret: Option<String>,
    },
    /// List alert rules.
    List {
        /// Tenant id.
        tenant: String,
    },
    /// Delete an alert rule.
    Delete {
        /// Tenant id.
        tenant: String,
        /// Rule id.
        id: String,
    },
}

/// Audit commands.
#[derive(Debug, Subcommand)]
pub enum AuditCmd {
    /// Verify the audit chain: on the authority (default), or offline from an exported
    /// file with --file and --public-key. Fails naming the first bad record.
    Verify {
        /// Tenant (default: every tenant; needs the admin token).
        #[arg(long)]
        tenant: Option<String>,
        /// Verify this exported file offline instead of asking the authority.
        #[arg(long, requires = "public_key")]
        file: Option<PathBuf>,
        /// The authority's public key (64 hex characters) for offline verification.
        #[arg(long)]
        public_key: Option<String>,
    },
    /// Export the signed chain (JSON lines) to a file, and print the public key.
    Export {
        /// Tenant (default: every tenant; needs the admin token).
        #[arg(long)]
        tenant: Option<String>,
        /// Output file.
        #[arg(long)]
        out: PathBuf,
    },
}

fn credits(flag: &str, s: &str) -> anyhow::Result<u64> {
    Credits::from_str(s)
        .map(|c| c.micros())
        .map_err(|e| anyhow!("{flag} {s:?}: {e} (give credits like 100 or 12.5)"))
}

/// `YYYY-MM-DD` (UTC midnight) or unix seconds, as unix milliseconds.
pub fn parse_time(flag: &str, s: &str) -> anyhow::Result<u64> {
    if let Ok(secs) = s.parse::<u64>() {
        return Ok(secs.saturating_mul(1000));
    }
    let parts: Vec<&str> = s.split('-').collect();
    if let [y, m, d] = parts.as_slice()
        && let (Ok(year), Ok(month), Ok(day)) = (y.parse::<i64>(), m.parse::<u8>(), d.parse::<u8>())
        && (1..=12).contains(&month)
        && day >= 1
        && day <= tollgate_core::time::days_in_month(year, month)
        && let Some(t) = (CivilDate { year, month, day }).to_unix()
    {
        return Ok(t.saturating_mul(1000));
    }
    bail!("{flag} {s:?} is not a date: use YYYY-MM-DD (UTC) or unix seconds")
}

fn show(c: u64) -> String {
    format!("{}", Credits(c))
}

fn show_ms(ms: u64) -> String {
    if ms == 0 {
        return "-".into();
    }
    let d = CivilDate::from_unix(ms / 1000);
    let s = (ms / 1000) % 86_400;
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02} UTC",
        d.year,
        d.month,
        d.day,
        s / 3600,
        (s / 60) % 60,
        s % 60
    )
}

/// A connected admin client.
pub struct Admin {
    client: AdminServiceClient<Channel>,
    token: Option<String>,
}

impl Admin {
    /// Connects to `url`.
    pub async fn connect(
        url: &str,
        token: Option<String>,
        ca: Option<&PathBuf>,
    ) -> anyhow::Result<Admin> {
        let mut ep = Endpoint::from_shared(url.to_string()).with_context(|| {
            format!("--authority {url:?} is not a URL like http://127.0.0.1:7070")
        })?;
        if url.starts_with("https://") {
            let mut tls = ClientTlsConfig::new();
            if let Some(ca) = ca {
                let pem = std::fs::read(ca)
                    .with_context(|| format!("cannot read --ca-cert {}", ca.display()))?;
                tls = tls.ca_certificate(tonic::transport::Certificate::from_pem(pem));
            }
            ep = ep.tls_config(tls).context("TLS configuration")?;
        }
        let ch = ep.connect().await.with_context(|| {
            format!("cannot reach the authority at {url}: is it running? (set --authority or TOLLGATE_AUTHORITY)")
        })?;
        Ok(Admin {
            client: AdminServiceClient::new(ch).max_decoding_message_size(512 * 1024 * 1024),
            token,
        })
    }

    fn req<T>(&self, msg: T) -> tonic::Request<T> {
        let mut r = tonic::Request::new(msg);
        if let Some(t) = &self.token
            && let Ok(v) = format!("Bearer {t}").parse()
        {
            r.metadata_mut().insert(tollgate_proto::AUTHORIZATION, v);
        }
        r
    }
}

fn status(e: tonic::Status) -> anyhow::Error {
    let hint = match e.code() {
        tonic::Code::Unauthenticated => " (set --admin-token or TOLLGATE_ADMIN_TOKEN)",
        tonic::Code::PermissionDenied => " (this token may not do that)",
        tonic::Code::Unavailable => " (is the authority running and reachable?)",
        _ => "",
    };
    anyhow!("{:?}: {}{hint}", e.code(), e.message())
}

/// Runs a ctl command and returns what it prints. Errors say what went wrong.
pub async fn execute(args: CtlArgs) -> anyhow::Result<String> {
    use std::fmt::Write;
    // Offline verification needs no authority.
    if let CtlCommand::Audit(AuditCmd::Verify {
        file: Some(file),
        public_key,
        ..
    }) = &args.command
    {
        return verify_file(file, public_key.as_deref().unwrap_or_default());
    }
    let mut a = Admin::connect(
        &args.authority,
        args.admin_token.clone(),
        args.ca_cert.as_ref(),
    )
    .await?;
    let mut out = String::new();
    match args.command {
        CtlCommand::Tenant(TenantCmd::Create {
            tenant,
            name,
            deduction_order,
        }) => {
            let order = match deduction_order {
                OrderArg::Priority => pb::DeductionOrder::Default,
                OrderArg::Expiry => pb::DeductionOrder::ExpiryFirst,
                OrderArg::Oldest => pb::DeductionOrder::OldestFirst,
            };
            let t = a
                .client
                .create_tenant(a.req(pb::CreateTenantRequest {
                    tenant,
                    display_name: name,
                    deduction_order: order as i32,
                }))
                .await
                .map_err(status)?
                .into_inner();
            writeln!(out, "created tenant {}", t.tenant)?;
        }
        CtlCommand::Tenant(TenantCmd::List) => {
            let r = a
                .client
                .list_tenants(a.req(pb::ListTenantsRequest {}))
                .await
                .map_err(status)?
                .into_inner();
            writeln!(out, "{:<24} {:<24} created", "tenant", "name")?;
            for t in r.tenants {
                writeln!(
                    out,
                    "{:<24} {:<24} {}",
                    t.tenant,
                    t.display_name,
                    show_ms(t.created_unix_ms)
                )?;
            }
        }
        CtlCommand::Grant(GrantCmd::Add {
            tenant,
            kind,
            amount,
            priority,
            starts,
            expires,
            reset,
            label,
        }) => {
            let g = pb::Grant {
                tenant,
                kind: match kind {
                    KindArg::Trial => pb::GrantKind::Trial,
                    KindArg::Promotional => pb::GrantKind::Promotional,
                    KindArg::Purchased => pb::GrantKind::Purchased,
                    KindArg::Recurring => pb::GrantKind::Recurring,
                } as i32,
                amount_micro: credits("--amount", &amount)?,
                priority,
                starts_unix_ms: starts
                    .map(|s| parse_time("--starts", &s))
                    .transpose()?
                    .unwrap_or(0),
                expires_unix_ms: expires
                    .map(|s| parse_time("--expires", &s))
                    .transpose()?
                    .unwrap_or(0),
                reset: match reset {
                    ResetArg::None => pb::ResetPeriod::None,
                    ResetArg::Monthly => pb::ResetPeriod::Monthly,
                    ResetArg::Annual => pb::ResetPeriod::Annual,
                } as i32,
                label,
                ..Default::default()
            };
            let g = a
                .client
                .add_grant(a.req(pb::AddGrantRequest { grant: Some(g) }))
                .await
                .map_err(status)?
                .into_inner();
            writeln!(
                out,
                "granted {} credits to {} (grant #{})",
                show(g.amount_micro),
                g.tenant,
                g.grant_id
            )?;
        }
        CtlCommand::Grant(GrantCmd::List { tenant }) => {
            let r = a
                .client
                .list_grants(a.req(pb::ListGrantsRequest { tenant }))
                .await
                .map_err(status)?
                .into_inner();
            write_grants(&mut out, &r.grants)?;
        }
        CtlCommand::PriceBook(PriceBookCmd::Set { tenant, file }) => {
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("cannot read {}", file.display()))?;
            let spec: PriceBookSpec = if file.extension().is_some_and(|e| e == "json") {
                serde_json::from_str(&text).with_context(|| {
                    format!("{} is not a valid price book (JSON)", file.display())
                })?
            } else {
                toml::from_str(&text).with_context(|| {
                    format!("{} is not a valid price book (TOML)", file.display())
                })?
            };
            let wire = crate::convert::price_book_to_wire(&tenant, &spec, 0);
            let b = a
                .client
                .set_price_book(a.req(pb::SetPriceBookRequest {
                    price_book: Some(wire),
                }))
                .await
                .map_err(status)?
                .into_inner();
            writeln!(
                out,
                "price book version {} of {} is in force ({} models)",
                b.version,
                b.tenant,
                b.models.len()
            )?;
        }
        CtlCommand::PriceBook(PriceBookCmd::Get { tenant }) => {
            let b = a
                .client
                .get_price_book(a.req(pb::GetPriceBookRequest { tenant, version: 0 }))
                .await
                .map_err(status)?
                .into_inner();
            writeln!(out, "{b:#?}")?;
        }
        CtlCommand::Plan(PlanCmd::Set {
            tenant,
            included,
            included_requests,
            overage_request_price,
            floor,
            hard_cap,
            shadow_cap,
        }) => {
            let p = pb::Plan {
                tenant,
                included_micro: credits("--included", &included)?,
                hard_cap_micro: credits("--hard-cap", &hard_cap)?,
                hard_cap_shadow: shadow_cap,
                included_requests,
                overage_request_price_micro: credits(
                    "--overage-request-price",
                    &overage_request_price,
                )?,
                consumption_floor_micro: credits("--floor", &floor)?,
            };
            let p = a
                .client
                .set_plan(a.req(pb::SetPlanRequest { plan: Some(p) }))
                .await
                .map_err(status)?
                .into_inner();
            writeln!(
                out,
                "plan of {} set; hard cap {}{}",
                p.tenant,
                if p.hard_cap_micro == 0 {
                    "none".to_string()
                } else {
                    show(p.hard_cap_micro)
                },
                if p.hard_cap_shadow { " (shadow)" } else { "" }
            )?;
        }
        CtlCommand::Plan(PlanCmd::Get { tenant }) => {
            let p = a
                .client
                .get_plan(a.req(pb::GetPlanRequest { tenant }))
                .await
                .map_err(status)?
                .into_inner();
            writeln!(out, "tenant              {}", p.tenant)?;
            writeln!(out, "included credits    {}", show(p.included_micro))?;
            writeln!(out, "included requests   {}", p.included_requests)?;
            writeln!(
                out,
                "overage per request {}",
                show(p.overage_request_price_micro)
            )?;
            writeln!(
                out,
                "consumption floor   {}",
                show(p.consumption_floor_micro)
            )?;
            writeln!(
                out,
                "hard cap            {}{}",
                show(p.hard_cap_micro),
                if p.hard_cap_shadow { " (shadow)" } else { "" }
            )?;
        }
        CtlCommand::Quota(QuotaCmd::Set {
            tenant,
            id,
            window,
            max,
            agent,
            tier,
            shadow,
        }) => {
            let mut limit = pb::LimitKey::tenant_window(
                tenant.clone(),
                match window {
                    WindowArg::Minute => pb::Window::Minute,
                    WindowArg::Hour => pb::Window::Hour,
                    WindowArg::Month => pb::Window::Month,
                },
            );
            if let Some(agent) = agent {
                limit.scope = pb::Scope::AgentInstance as i32;
                limit.agent_instance = agent;
            } else if let Some(t) = tier {
                limit.scope = pb::Scope::Tier as i32;
                limit.tier = match t {
                    TierArg::Interactive => pb::Tier::Interactive,
                    TierArg::Scheduler => pb::Tier::Scheduler,
                    TierArg::Background => pb::Tier::Background,
                } as i32;
            }
            let key = limit.canonical();
            a.client
                .set_quota(a.req(pb::SetQuotaRequest {
                    rule: Some(pb::QuotaRule {
                        id: id.clone(),
                        limit: Some(limit),
                        max_micro: credits("--max", &max)?,
                        shadow,
                    }),
                }))
                .await
                .map_err(status)?;
            writeln!(
                out,
                "quota {id} on {key}: at most {max} credits{}",
                if shadow { " (shadow)" } else { "" }
            )?;
        }
        CtlCommand::Quota(QuotaCmd::Delete { tenant, id }) => {
            a.client
                .delete_quota(a.req(pb::DeleteQuotaRequest {
                    tenant,
                    rule_id: id.clone(),
                }))
                .await
                .map_err(status)?;
            writeln!(out, "deleted quota {id}")?;
        }
        CtlCommand::Quota(QuotaCmd::Floor {
            tenant,
            tier,
            credits: amount,
            permille,
            shadow,
        }) => {
            let tier = match tier {
                TierArg::Interactive => pb::Tier::Interactive,
                TierArg::Scheduler => pb::Tier::Scheduler,
                TierArg::Background => pb::Tier::Background,
            };
            a.client
                .set_tier_floor(a.req(pb::SetTierFloorRequest {
                    tenant,
                    floor: Some(pb::TierFloor {
                        tier: tier as i32,
                        floor_micro: credits("--credits", &amount)?,
                        floor_permille: permille,
                        shadow,
                    }),
                }))
                .await
                .map_err(status)?;
            writeln!(out, "floor of tier {} set", tier.as_str_name())?;
        }
        CtlCommand::Quota(QuotaCmd::List { tenant }) => {
            let p = a
                .client
                .get_policy(a.req(pb::GetPolicyRequest { tenant }))
                .await
                .map_err(status)?
                .into_inner();
            writeln!(
                out,
                "policy version {} (price book {})",
                p.version, p.price_book_version
            )?;
            writeln!(
                out,
                "hard cap {}{}",
                if p.hard_cap_micro == 0 {
                    "none".into()
                } else {
                    show(p.hard_cap_micro)
                },
                if p.hard_cap_shadow { " (shadow)" } else { "" }
            )?;
            for f in &p.tier_floors {
                let tier = pb::Tier::try_from(f.tier)
                    .map(|t| t.as_str_name())
                    .unwrap_or("?");
                writeln!(
                    out,
                    "floor {tier}: {} credits / {} permille{}",
                    show(f.floor_micro),
                    f.floor_permille,
                    if f.shadow { " (shadow)" } else { "" }
                )?;
            }
            for q in p.quotas {
                let key = q
                    .limit
                    .as_ref()
                    .map(pb::LimitKey::canonical)
                    .unwrap_or_default();
                writeln!(
                    out,
                    "{:<20} {:<36} {}{}",
                    q.id,
                    key,
                    show(q.max_micro),
                    if q.shadow { " (shadow)" } else { "" }
                )?;
            }
        }
        CtlCommand::Alert(AlertCmd::Set {
            tenant,
            id,
            percent,
            depletion_hours,
            webhook,
            webhook_secret,
        }) => {
            let condition = match (percent, depletion_hours) {
                (Some(p), _) => {
                    pb::alert_rule::Condition::PercentUsedPermille(p.saturating_mul(10))
                }
                (None, Some(h)) => pb::alert_rule::Condition::DepletionWithinHours(h),
                (None, None) => bail!("give --percent or --depletion-hours"),
            };
            a.client
                .set_alert_rule(a.req(pb::SetAlertRuleRequest {
                    rule: Some(pb::AlertRule {
                        id: id.clone(),
                        tenant,
                        condition: Some(condition),
                        webhook_url: webhook,
                        webhook_secret: webhook_secret.unwrap_or_default(),
                        has_webhook_secret: false,
                    }),
                }))
                .await
                .map_err(status)?;
            writeln!(out, "alert rule {id} set")?;
        }
        CtlCommand::Alert(AlertCmd::List { tenant }) => {
            let r = a
                .client
                .list_alert_rules(a.req(pb::ListAlertRulesRequest { tenant }))
                .await
                .map_err(status)?
                .into_inner();
            for rule in r.rules {
                let cond = match rule.condition {
                    Some(pb::alert_rule::Condition::PercentUsedPermille(p)) => {
                        format!("{}% used", p / 10)
                    }
                    Some(pb::alert_rule::Condition::DepletionWithinHours(h)) => {
                        format!("depletion within {h} h")
                    }
                    None => "-".into(),
                };
                let secret = if rule.has_webhook_secret {
                    " (own secret)"
                } else {
                    ""
                };
                writeln!(
                    out,
                    "{:<20} {:<28} {}{secret}",
                    rule.id, cond, rule.webhook_url
                )?;
            }
        }
        CtlCommand::Alert(AlertCmd::Delete { tenant, id }) => {
            let r = a
                .client
                .delete_alert_rule(a.req(pb::DeleteAlertRuleRequest {
                    tenant,
                    id: id.clone(),
                }))
                .await
                .map_err(status)?
                .into_inner();
            if !r.deleted {
                bail!("no alert rule {id}");
            }
            writeln!(out, "deleted alert rule {id}")?;
        }
        CtlCommand::Balance { tenant } => {
            let b = a
                .client
                .get_balance(a.req(pb::GetBalanceRequest { tenant }))
                .await
                .map_err(status)?
                .into_inner();
            if args.raw {
                writeln!(out, "{b:#?}")?;
            } else {
                writeln!(out, "tenant               {}", b.tenant)?;
                writeln!(out, "available            {}", show(b.available_micro))?;
                writeln!(out, "held (leases)        {}", show(b.held_micro))?;
                writeln!(out, "consumed             {}", show(b.consumed_micro))?;
                writeln!(out, "granted              {}", show(b.granted_micro))?;
                writeln!(out, "expired              {}", show(b.expired_micro))?;
                writeln!(out, "spent this month     {}", show(b.period_spent_micro))?;
                writeln!(
                    out,
                    "hard cap             {}",
                    if b.hard_cap_micro == 0 {
                        "none".into()
                    } else {
                        show(b.hard_cap_micro)
                    }
                )?;
                writeln!(
                    out,
                    "burn (last hour)     {}/h",
                    show(b.burn_1h_per_hour_micro)
                )?;
                writeln!(
                    out,
                    "burn (last 24 h)     {}/h",
                    show(b.burn_24h_per_hour_micro)
                )?;
                writeln!(
                    out,
                    "projected depletion  {}",
                    show_ms(b.projected_depletion_unix_ms)
                )?;
                writeln!(out)?;
                write_grants(&mut out, &b.grants)?;
            }
        }
        CtlCommand::Statement { tenant, from, to } => {
            let s = a
                .client
                .get_statement(
                    a.req(pb::GetStatementRequest {
                        tenant,
                        from_unix_ms: from
                            .map(|s| parse_time("--from", &s))
                            .transpose()?
                            .unwrap_or(0),
                        to_unix_ms: to.map(|s| parse_time("--to", &s)).transpose()?.unwrap_or(0),
                    }),
                )
                .await
                .map_err(status)?
                .into_inner();
            writeln!(
                out,
                "statement of {}: {} credits over {} calls",
                s.tenant,
                show(s.total_micro),
                s.calls
            )?;
            for (title, lines) in [
                ("by agent", &s.by_agent),
                ("by model", &s.by_model),
                ("by feature", &s.by_feature),
                ("by grant", &s.by_grant),
            ] {
                writeln!(out, "\n{title}:")?;
                for l in lines {
                    writeln!(
                        out,
                        "  {:<32} {:>20} {:>10} calls {:>12} in {:>12} out",
                        l.key,
                        show(l.amount_micro),
                        l.calls,
                        l.input_tokens,
                        l.output_tokens
                    )?;
                }
            }
        }
        CtlCommand::Audit(AuditCmd::Verify { tenant, .. }) => {
            let r = a
                .client
                .verify_audit(a.req(pb::VerifyAuditRequest {
                    tenant: tenant.unwrap_or_default(),
                }))
                .await
                .map_err(status)?
                .into_inner();
            if !r.ok {
                bail!(
                    "audit chain verification FAILED: tenant {}, record seq {}: {}",
                    r.bad_tenant,
                    r.bad_seq,
                    r.problem
                );
            }
            writeln!(
                out,
                "audit chain OK: {} records verified",
                r.records_checked
            )?;
        }
        CtlCommand::Audit(AuditCmd::Export { tenant, out: path }) => {
            let r = a
                .client
                .export_audit(a.req(pb::ExportAuditRequest {
                    tenant: tenant.unwrap_or_default(),
                    jsonl: true,
                    ..Default::default()
                }))
                .await
                .map_err(status)?
                .into_inner();
            std::fs::write(&path, &r.export_jsonl)
                .with_context(|| format!("cannot write {}", path.display()))?;
            let lines = r.export_jsonl.iter().filter(|b| **b == b'\n').count();
            writeln!(out, "wrote {} ({lines} lines)", path.display())?;
            writeln!(out, "public key: {}", hex::encode(&r.public_key))?;
            writeln!(
                out,
                "verify offline: tollgate ctl audit verify --file {} --public-key {}",
                path.display(),
                hex::encode(&r.public_key)
            )?;
        }
    }
    Ok(out)
}

fn write_grants(out: &mut String, grants: &[pb::Grant]) -> anyhow::Result<()> {
    use std::fmt::Write;
    writeln!(
        out,
        "{:>6} {:<12} {:>8} {:>20} {:>20} {:<24} label",
        "grant", "kind", "priority", "amount", "remaining", "expires"
    )?;
    for g in grants {
        let kind = pb::GrantKind::try_from(g.kind)
            .map(|k| {
                k.as_str_name()
                    .trim_start_matches("GRANT_KIND_")
                    .to_lowercase()
            })
            .unwrap_or_default();
        writeln!(
            out,
            "{:>6} {:<12} {:>8} {:>20} {:>20} {:<24} {}",
            g.grant_id,
            kind,
            g.priority,
            show(g.amount_micro),
            show(g.remaining_micro),
            show_ms(g.expires_unix_ms),
            g.label
        )?;
    }
    Ok(())
}

/// Verifies an exported file offline with the authority's public key.
pub fn verify_file(file: &PathBuf, public_key_hex: &str) -> anyhow::Result<String> {
    let key = tollgate_ledger::parse_public_key(public_key_hex.trim())
        .map_err(|e| anyhow!("--public-key: {e}"))?;
    let f = std::fs::File::open(file).with_context(|| format!("cannot open {}", file.display()))?;
    match tollgate_ledger::verify(std::io::BufReader::new(f), &key) {
        Ok(report) => Ok(format!(
            "audit export {} OK: {} records of {} tenant(s) verified\n",
            file.display(),
            report.records(),
            report.tenants.len()
        )),
        Err(e) => bail!("audit export {} FAILED verification: {e}", file.display()),
    }
}

/// Entry point of `tollgate ctl`.
pub fn run(args: CtlArgs) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let out = rt.block_on(execute(args))?;
    print!("{out}");
    Ok(())
}

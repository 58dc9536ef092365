//! `tollgate ctl`: the admin command line, a client of the authority's admin service.
//!
//! Amounts are given and shown in credits with up to six decimals (`12.5`, `0.000001`);
//! on the wire they are integer micro-credits. Times are `YYYY-MM-DD` (UTC midnight) or
//! unix seconds.
//!
//! One module per command group, each with its clap subcommand and the code that runs it:
//! [`tenants`], [`grants`], [`price_book`], [`plans`], [`pack`] (credit packs: the price
//! of credits in the tenant's currency), [`quotas`], [`alerts`], [`statements`] (balance
//! and statement), [`tasks`] (tasks and reported denials), [`audit`] (verify, also
//! offline, and export), [`estimate`] (what a workload would cost).
//! [`connect`] makes the admin client (the `--authority` URL is checked there);
//! [`units`] parses and prints credits and dates and builds the text tables. This module
//! holds the global flags and the dispatcher, [`execute`].

pub mod alerts;
pub mod audit;
pub mod connect;
pub mod estimate;
pub mod grants;
pub mod pack;
pub mod plans;
pub mod price_book;
pub mod quotas;
pub mod statements;
pub mod tasks;
pub mod tenants;
pub mod units;

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Subcommand};

pub use alerts::AlertCmd;
pub use audit::{AuditCmd, verify_file};
pub use connect::Admin;
pub use estimate::{EstimateArgs, WhatIfArgs};
pub use grants::{GrantCmd, KindArg, ResetArg};
pub use pack::PackCmd;
pub use plans::PlanCmd;
pub use price_book::PriceBookCmd;
pub use quotas::{QuotaCmd, TierArg, WindowArg};
pub use statements::{BalanceArgs, StatementArgs};
pub use tasks::{DenialsArgs, TaskCmd};
pub use tenants::{OrderArg, TenantCmd};
pub use units::parse_time;

const AFTER_HELP: &str = "\
Examples:
  export TOLLGATE_AUTHORITY=http://127.0.0.1:7070 TOLLGATE_ADMIN_TOKEN=change-me
  tollgate ctl tenant create acme --name \"Acme Corp\"
  tollgate ctl grant add acme --kind trial --amount 100 --expires 2027-01-01
  tollgate ctl grant add acme --kind purchased --amount 5000 --label invoice-42
  tollgate ctl pack set acme --credits 100000 --price 500 --currency USD
  tollgate ctl grant buy acme --packs 2 --reference invoice-43
  tollgate ctl price-book set acme --file prices.toml
  tollgate ctl plan set acme --included 1000 --hard-cap 8000
  tollgate ctl plan set acme --seats 10 --seat-price 19 --included-requests-per-seat 300 --overage-request-price 0.04
  tollgate ctl quota set acme per-minute --window minute --max 50
  tollgate ctl quota set acme bot-hourly --window hour --max 200 --agent support-bot
  tollgate ctl alert set acme eighty --percent 80 --webhook https://hooks.example/tollgate
  tollgate ctl balance acme
  tollgate ctl statement acme --from 2026-11-01
  tollgate ctl task list acme
  tollgate ctl denials acme
  tollgate ctl estimate acme --line gpt-4o:2000:1200:300 --days 30
  tollgate ctl what-if acme --price-book new-prices.toml --from 2026-11-01
  tollgate ctl audit verify --tenant acme
  tollgate ctl audit export --tenant acme --out acme-audit.jsonl
  tollgate ctl audit verify --file acme-audit.jsonl --public-key <hex> --tenant acme --max-head-age 1h

Amounts are credits (up to 6 decimals); dates are YYYY-MM-DD (UTC) or unix seconds.";

/// Administer Tollgate: tenants, credits, prices, plans, quotas, alerts, balances, audit.
#[derive(Debug, Args)]
#[command(
    about = "Administer Tollgate: tenants, grants, price books, plans, quotas, alerts, balance, statements, audit",
    long_about = "Administer Tollgate through the authority's admin service: create tenants, \
grant credits, set price books, plans (hard caps) and quotas (pushed to every sidecar at once), \
alert rules with webhooks, read balances with burn rate and projected depletion, statements, \
and export or verify the signed audit chain (also offline, from an exported file); \
estimate what a workload would cost.",
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
    /// Set or show a tenant's plan: included allowance, seats, overage price, floor, hard cap.
    #[command(subcommand)]
    Plan(PlanCmd),
    /// Set or clear the price of a tenant's credits in its currency (a credit pack).
    #[command(subcommand)]
    Pack(PackCmd),
    /// Set, delete or list quotas (per minute, hour or month; tenant, agent or tier).
    #[command(subcommand)]
    Quota(QuotaCmd),
    /// Set, delete or list alert rules (budget percent used, projected depletion).
    #[command(subcommand)]
    Alert(AlertCmd),
    /// Show a tenant's balance, burn rate and projected depletion.
    Balance(BalanceArgs),
    /// Show a tenant's spend by agent, task, instance, model, feature and source.
    Statement(StatementArgs),
    /// List a tenant's tasks: budget, calls, spend, work units, whether closed.
    #[command(subcommand)]
    Task(TaskCmd),
    /// Show the calls sidecars reported denied, by limit and tier.
    Denials(DenialsArgs),
    /// Verify or export the signed audit chain.
    #[command(subcommand)]
    Audit(AuditCmd),
    /// Estimate what a workload would cost: credits, money, which grants pay, the plan,
    /// when a limit would stop it, the runway.
    Estimate(EstimateArgs),
    /// Rate a past period's recorded usage under another price book, line by line.
    #[command(name = "what-if")]
    WhatIf(WhatIfArgs),
}

/// Runs a ctl command and returns what it prints. Errors say what went wrong.
pub async fn execute(args: CtlArgs) -> anyhow::Result<String> {
    // Offline verification needs no authority.
    if let CtlCommand::Audit(cmd) = &args.command
        && let Some(report) = audit::offline(cmd)
    {
        return report.map(|r| printable(&r));
    }
    let mut a = Admin::connect(
        &args.authority,
        args.admin_token.clone(),
        args.ca_cert.as_ref(),
    )
    .await?;
    let mut out = String::new();
    match args.command {
        CtlCommand::Tenant(cmd) => tenants::run(cmd, &mut a, &mut out).await?,
        CtlCommand::Grant(cmd) => grants::run(cmd, &mut a, &mut out).await?,
        CtlCommand::PriceBook(cmd) => price_book::run(cmd, &mut a, &mut out).await?,
        CtlCommand::Plan(cmd) => plans::run(cmd, &mut a, &mut out).await?,
        CtlCommand::Pack(cmd) => pack::run(cmd, &mut a, &mut out).await?,
        CtlCommand::Quota(cmd) => quotas::run(cmd, &mut a, &mut out).await?,
        CtlCommand::Alert(cmd) => alerts::run(cmd, &mut a, &mut out).await?,
        CtlCommand::Balance(cmd) => statements::balance(cmd, args.raw, &mut a, &mut out).await?,
        CtlCommand::Statement(cmd) => statements::statement(cmd, &mut a, &mut out).await?,
        CtlCommand::Task(cmd) => tasks::run(cmd, &mut a, &mut out).await?,
        CtlCommand::Denials(cmd) => tasks::denials(cmd, &mut a, &mut out).await?,
        CtlCommand::Audit(cmd) => audit::run(cmd, &mut a, &mut out).await?,
        CtlCommand::Estimate(cmd) => estimate::run(cmd, &mut a, &mut out).await?,
        CtlCommand::WhatIf(cmd) => estimate::what_if(cmd, &mut a, &mut out).await?,
    }
    Ok(printable(&out))
}

/// `text` with every control character except newline and tab escaped (`\u{1b}`), so a
/// name or message someone chose (a tenant name, a rule id, an error from the authority)
/// cannot move the cursor, recolour or rewrite the terminal it is printed on.
pub fn printable(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_control() && c != '\n' && c != '\t' {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// Entry point of `tollgate ctl`.
pub fn run(args: CtlArgs) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let out = rt
        .block_on(execute(args))
        .map_err(|e| anyhow::anyhow!(printable(&format!("{e:#}"))))?;
    print!("{out}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory, Parser};

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        ctl: super::CtlArgs,
    }

    /// Every command path with its arguments, depth first.
    fn tree(cmd: &clap::Command, path: &str, out: &mut Vec<String>) {
        for sub in cmd.get_subcommands().filter(|s| s.get_name() != "help") {
            let p = format!("{path} {}", sub.get_name()).trim().to_string();
            let args: Vec<String> = sub
                .get_arguments()
                .filter(|a| !a.is_global_set() && a.get_id() != "help")
                .map(|a| match a.get_long() {
                    Some(l) => format!("--{l}"),
                    None => a.get_id().to_string(),
                })
                .collect();
            out.push(format!("{p}: {}", args.join(" ")));
            tree(sub, &p, out);
        }
    }

    #[test]
    fn the_commands_and_their_flags_stay_as_they_were() {
        let mut cmd = Cli::command();
        cmd.build();
        let mut lines = Vec::new();
        tree(&cmd, "", &mut lines);
        let expected = [
            "tenant: ",
            "tenant create: tenant --name --deduction-order",
            "tenant list: ",
            "grant: ",
            "grant add: tenant --kind --amount --priority --starts --expires --reset --label",
            "grant buy: tenant --packs --reference --expires",
            "grant list: tenant",
            "price-book: ",
            "price-book set: tenant --file",
            "price-book get: tenant",
            "plan: ",
            "plan set: tenant --included --included-requests --overage-request-price --floor --hard-cap --shadow-cap --seats --seat-price --included-per-seat --included-requests-per-seat",
            "plan get: tenant",
            "pack: ",
            "pack set: tenant --credits --price --currency",
            "pack clear: tenant",
            "quota: ",
            "quota set: tenant id --window --max --agent --tier --shadow",
            "quota delete: tenant id",
            "quota floor: tenant --tier --credits --permille --shadow",
            "quota list: tenant",
            "alert: ",
            "alert set: tenant id --percent --depletion-hours --webhook --webhook-secret",
            "alert list: tenant",
            "alert delete: tenant id",
            "balance: tenant",
            "statement: tenant --from --to",
            "task: ",
            "task list: tenant --limit",
            "denials: tenant --since",
            "audit: ",
            "audit verify: --tenant --all-tenants --file --public-key --max-head-age --head-after",
            "audit export: --tenant --out",
            "estimate: tenant --line --days --total --agent-initiated --agent --feature",
            "what-if: tenant --price-book --from --to",
        ];
        let lines: Vec<&str> = lines.iter().map(String::as_str).collect();
        assert_eq!(lines, expected);
        let globals: Vec<_> = cmd.get_arguments().filter_map(|a| a.get_long()).collect();
        assert_eq!(
            globals,
            ["authority", "admin-token", "ca-cert", "raw", "help"]
        );

        // The groups' own lines, not their argument structs', describe them.
        let balance = cmd
            .find_subcommand_mut("balance")
            .unwrap()
            .render_help()
            .to_string();
        assert!(
            balance.starts_with("Show a tenant's balance, burn rate"),
            "{balance}"
        );
        let statement = cmd
            .find_subcommand_mut("statement")
            .unwrap()
            .render_help()
            .to_string();
        assert!(
            statement.starts_with("Show a tenant's spend by agent, task"),
            "{statement}"
        );
    }

    #[test]
    fn offline_verification_needs_no_authority_and_names_a_bad_key() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("audit.jsonl");
        std::fs::write(&file, b"").unwrap();
        let args = Cli::try_parse_from([
            "ctl",
            "--authority",
            "http://127.0.0.1:1",
            "audit",
            "verify",
            "--file",
            file.to_str().unwrap(),
            "--public-key",
            "not-hex",
        ])
        .unwrap()
        .ctl;
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let e = rt.block_on(super::execute(args)).unwrap_err().to_string();
        assert!(e.contains("--public-key"), "{e}");
        assert!(!e.contains("cannot reach"), "{e}");
    }

    #[test]
    fn control_characters_are_escaped_newlines_and_tabs_kept() {
        let shown = super::printable("acme\u{1b}[2J\r\tcorp\nnext\u{7}");
        assert_eq!(shown, "acme\\u{1b}[2J\\r\tcorp\nnext\\u{7}");
        assert!(
            !shown
                .chars()
                .any(|c| c.is_control() && c != '\n' && c != '\t')
        );
    }
}

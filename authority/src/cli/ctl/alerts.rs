//! `ctl alert`: alert rules (percent of the budget used, projected depletion) and their
//! webhooks.

use std::fmt::Write;

use anyhow::bail;
use clap::Subcommand;
use tollgate_proto::v1 as pb;

use super::connect::{Admin, status};
use super::units::{put_table, table};

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

/// Runs an alert command.
pub async fn run(cmd: AlertCmd, a: &mut Admin, out: &mut String) -> anyhow::Result<()> {
    match cmd {
        AlertCmd::Set {
            tenant,
            id,
            percent,
            depletion_hours,
            webhook,
            webhook_secret,
        } => {
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
        AlertCmd::List { tenant } => {
            let r = a
                .client
                .list_alert_rules(a.req(pb::ListAlertRulesRequest { tenant }))
                .await
                .map_err(status)?
                .into_inner();
            let mut t = table(&["rule", "condition", "webhook"], &[]);
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
                // The secret itself is write-only: only whether the rule has its own.
                let secret = if rule.has_webhook_secret {
                    " (own secret)"
                } else {
                    ""
                };
                t.add_row(vec![rule.id, cond, format!("{}{secret}", rule.webhook_url)]);
            }
            put_table(out, &t);
        }
        AlertCmd::Delete { tenant, id } => {
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
    }
    Ok(())
}

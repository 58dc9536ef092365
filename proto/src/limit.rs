//! Helpers on [`LimitKey`]: constructors and the canonical text form used in logs, metrics
//! and `tollgate ctl`.

use crate::v1::{LimitKey, Scope, Tier, Window};

impl LimitKey {
    /// The tenant's wallet (balance and hard cap).
    pub fn wallet(tenant: impl Into<String>) -> Self {
        LimitKey {
            tenant: tenant.into(),
            scope: Scope::Tenant as i32,
            window: Window::None as i32,
            agent: String::new(),
            task: String::new(),
            tier: Tier::Unspecified as i32,
        }
    }

    /// A tenant-wide window (per minute, hour or month).
    pub fn tenant_window(tenant: impl Into<String>, window: Window) -> Self {
        LimitKey {
            window: window as i32,
            ..LimitKey::wallet(tenant)
        }
    }

    /// One agent's quota in `window`, by the agent's name.
    pub fn agent_window(
        tenant: impl Into<String>,
        agent: impl Into<String>,
        window: Window,
    ) -> Self {
        LimitKey {
            scope: Scope::Agent as i32,
            agent: agent.into(),
            window: window as i32,
            ..LimitKey::wallet(tenant)
        }
    }

    /// One task's budget (for its whole life).
    pub fn task(tenant: impl Into<String>, task: impl Into<String>) -> Self {
        LimitKey {
            scope: Scope::Task as i32,
            task: task.into(),
            ..LimitKey::wallet(tenant)
        }
    }

    /// True for the tenant's wallet limit.
    pub fn is_wallet(&self) -> bool {
        self.scope == Scope::Tenant as i32 && self.window == Window::None as i32
    }

    /// Canonical text form: `acme/wallet`, `acme/minute`, `acme/agent/bot-1/hour`,
    /// `acme/tier/background/month`, `acme/task/ticket-4711`. Unknown enum values print as `?<n>`.
    pub fn canonical(&self) -> String {
        let window = match Window::try_from(self.window) {
            Ok(Window::None) => "wallet".to_string(),
            Ok(Window::Minute) => "minute".to_string(),
            Ok(Window::Hour) => "hour".to_string(),
            Ok(Window::Month) => "month".to_string(),
            Err(_) => format!("?{}", self.window),
        };
        match Scope::try_from(self.scope) {
            Ok(Scope::Tenant) => format!("{}/{}", self.tenant, window),
            Ok(Scope::Agent) => {
                format!("{}/agent/{}/{}", self.tenant, self.agent, window)
            }
            Ok(Scope::Task) => format!("{}/task/{}", self.tenant, self.task),
            Ok(Scope::Tier) => {
                let tier = match Tier::try_from(self.tier) {
                    Ok(Tier::Interactive) => "interactive".to_string(),
                    Ok(Tier::Scheduler) => "scheduler".to_string(),
                    Ok(Tier::Background) => "background".to_string(),
                    Ok(Tier::Unspecified) => "unspecified".to_string(),
                    Err(_) => format!("?{}", self.tier),
                };
                format!("{}/tier/{}/{}", self.tenant, tier, window)
            }
            Err(_) => format!("{}/?{}/{}", self.tenant, self.scope, window),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_forms() {
        assert_eq!(LimitKey::wallet("acme").canonical(), "acme/wallet");
        assert!(LimitKey::wallet("acme").is_wallet());
        let m = LimitKey::tenant_window("acme", Window::Minute);
        assert_eq!(m.canonical(), "acme/minute");
        assert!(!m.is_wallet());
        let a = LimitKey {
            scope: Scope::Agent as i32,
            agent: "bot-1".into(),
            window: Window::Hour as i32,
            ..LimitKey::wallet("acme")
        };
        assert_eq!(a.canonical(), "acme/agent/bot-1/hour");
        let t = LimitKey {
            scope: Scope::Tier as i32,
            tier: Tier::Background as i32,
            window: Window::Month as i32,
            ..LimitKey::wallet("acme")
        };
        assert_eq!(t.canonical(), "acme/tier/background/month");
        assert_eq!(
            LimitKey::agent_window("acme", "bot-1", Window::Hour),
            a,
            "the constructor builds the same key"
        );
        assert_eq!(
            LimitKey::task("acme", "ticket-4711").canonical(),
            "acme/task/ticket-4711"
        );
    }
}

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
            agent_instance: String::new(),
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

    /// True for the tenant's wallet limit.
    pub fn is_wallet(&self) -> bool {
        self.scope == Scope::Tenant as i32 && self.window == Window::None as i32
    }

    /// Canonical text form: `acme/wallet`, `acme/minute`, `acme/agent/bot-1/hour`,
    /// `acme/tier/background/month`. Unknown enum values print as `?<n>`.
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
            Ok(Scope::AgentInstance) => {
                format!("{}/agent/{}/{}", self.tenant, self.agent_instance, window)
            }
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
            scope: Scope::AgentInstance as i32,
            agent_instance: "bot-1".into(),
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
    }
}

//! Degrade before the wall: the authority's projected depletion of each tenant, read
//! periodically from its admin API (`GetBalance`: when the available balance runs out at
//! the last hour's burn). While it falls within the configured horizon, calls of the
//! configured tiers are routed to a cheaper model or refused (see `docs/gateway.md`).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use tollgate_proto::v1::GetBalanceRequest;
use tollgate_proto::v1::admin_service_client::AdminServiceClient;

use crate::budget::Budgets;
use crate::config::Degrade;

/// Reads the projection of every tenant in `tenants` every `poll_secs`, for ever. A tenant
/// the authority cannot answer for keeps its last reading (logged).
pub async fn poll(d: Degrade, tenants: BTreeSet<String>, budgets: Arc<Budgets>) {
    let every = Duration::from_secs(d.poll_secs);
    let mut client: Option<AdminServiceClient<tonic::transport::Channel>> = None;
    loop {
        if client.is_none() {
            match tonic::transport::Endpoint::from_shared(d.authority.clone()) {
                Ok(ep) => match ep.connect_timeout(Duration::from_secs(5)).connect().await {
                    Ok(ch) => client = Some(AdminServiceClient::new(ch)),
                    Err(e) => tracing::warn!(error = %e, "degrade: cannot reach the authority"),
                },
                Err(e) => tracing::warn!(error = %e, "degrade: bad authority URL"),
            }
        }
        if let Some(c) = client.as_mut() {
            for t in &tenants {
                let mut req = tonic::Request::new(GetBalanceRequest { tenant: t.clone() });
                if let Some(tok) = &d.token
                    && let Ok(v) = format!("Bearer {tok}").parse()
                {
                    req.metadata_mut().insert(tollgate_proto::AUTHORIZATION, v);
                }
                match c.get_balance(req).await {
                    Ok(b) => budgets.set_depletion(t, b.into_inner().projected_depletion_unix_ms),
                    Err(e) => {
                        tracing::warn!(tenant = %t, error = %e, "degrade: balance unreadable")
                    }
                }
            }
        }
        tokio::time::sleep(every).await;
    }
}

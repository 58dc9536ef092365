//! Leases never exceed what the wallet and every window allow, however many sidecars ask
//! at once.

use std::collections::HashMap;

use tollgate_proto::v1::{self as pb};

use super::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_sidecars_never_lease_past_the_wallet_or_a_window() {
    if skip_without_store("concurrent_sidecars_never_lease_past_the_wallet_or_a_window") {
        return;
    }
    let h = start_harness().await;
    // 10 credits in the wallet; a tenant-wide quota of 3 credits per hour.
    setup_tenant(&h.url, "acme", 10).await;
    let mut a = admin(&h.url).await;
    a.set_quota(req(
        pb::SetQuotaRequest {
            rule: Some(pb::QuotaRule {
                id: "hourly".into(),
                limit: Some(pb::LimitKey::tenant_window("acme", pb::Window::Hour)),
                max_micro: 3_000_000,
                shadow: false,
            }),
        },
        Some(ADMIN),
    ))
    .await
    .unwrap();

    let mut sidecars = Vec::new();
    for i in 0..4 {
        sidecars.push(Sidecar::connect(&h.url, &format!("pod-{i}"), SC_ACME, &["acme"]).await);
    }
    let wallet = pb::LimitKey::wallet("acme");
    let hourly = pb::LimitKey::tenant_window("acme", pb::Window::Hour);
    // Every sidecar asks for far more than there is, three rounds, all at once.
    let mut tasks = Vec::new();
    for mut sc in sidecars {
        let (wallet, hourly) = (wallet.clone(), hourly.clone());
        tasks.push(tokio::spawn(async move {
            let mut held: HashMap<String, u64> = HashMap::new();
            let mut leases = Vec::new();
            for _ in 0..3 {
                sc.demand(
                    wallet.clone(),
                    8_000_000,
                    held.get("acme/wallet").copied().unwrap_or(0),
                )
                .await;
                sc.demand(
                    hourly.clone(),
                    2_000_000,
                    held.get("acme/hour").copied().unwrap_or(0),
                )
                .await;
                // A heartbeat after the demands: its echo means they were decided.
                sc.send(pb::session_up::Msg::Heartbeat(pb::Heartbeat { unix_ms: 0 }))
                    .await;
                loop {
                    match sc.next().await {
                        pb::session_down::Msg::Grant(g) => {
                            let l = g.lease.unwrap();
                            *held
                                .entry(l.limit.as_ref().unwrap().canonical())
                                .or_default() += l.amount_micro;
                            leases.push(l);
                        }
                        pb::session_down::Msg::Heartbeat(_) => break,
                        _ => {}
                    }
                }
            }
            leases
        }));
    }
    let mut per_limit: HashMap<String, u64> = HashMap::new();
    let mut n = 0;
    for t in tasks {
        for l in t.await.unwrap() {
            *per_limit.entry(l.limit.unwrap().canonical()).or_default() += l.amount_micro;
            n += 1;
        }
    }
    assert!(n > 0, "some leases were granted");
    let wallet_total = per_limit.get("acme/wallet").copied().unwrap_or(0);
    let hourly_total = per_limit.get("acme/hour").copied().unwrap_or(0);
    assert!(
        wallet_total > 0 && wallet_total <= 10_000_000,
        "wallet leases {wallet_total}"
    );
    assert!(
        hourly_total > 0 && hourly_total <= 3_000_000,
        "window leases {hourly_total}"
    );
    let b = balance(&h.url, "acme").await;
    assert_eq!(b.held_micro, wallet_total, "every wallet lease is one hold");
    assert_eq!(b.available_micro + b.held_micro, 10_000_000);
    h.running.shutdown().await.unwrap();
}

//! Leases never exceed what the wallet and every window allow, however many sidecars ask
//! at once.

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
    set_quota(
        &h.url,
        "hourly",
        pb::LimitKey::tenant_window("acme", pb::Window::Hour),
        3_000_000,
    )
    .await;

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
            sc.lease_rounds(&[(wallet, 8_000_000), (hourly, 2_000_000)], 3)
                .await
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    let n = all.len();
    let per_limit = Sidecar::totals(all);
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

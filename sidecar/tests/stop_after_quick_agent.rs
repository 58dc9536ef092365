//! An agent that claims a lane, spends and lets go of it within one drain period, right
//! before a graceful stop: the stop reclaims the lane before it drains, and the lane's calls
//! must still reach the authority.

use std::time::{Duration, Instant};

use tollgate_authority::config::{Config as AuthorityConfig, LeaseConfig, SidecarCredential};
use tollgate_authority::server::ServeOptions;
use tollgate_client::{Call, Gate};
use tollgate_core::{Tier, Usage};
use tollgate_proto::v1::admin_service_client::AdminServiceClient;
use tollgate_proto::v1::{self, GetStatementRequest};
use tollgate_sidecar::cli::Config;

const ADMIN: &str = "admin-token";
const TENANT: &str = "acme";
const MODEL: &str = "m";

fn authed<T>(m: T) -> tonic::Request<T> {
    let mut r = tonic::Request::new(m);
    r.metadata_mut().insert(
        "authorization",
        format!("Bearer {ADMIN}").parse().expect("header"),
    );
    r
}

fn wait_for(what: &str, mut ok: impl FnMut() -> bool) {
    let end = Instant::now() + Duration::from_secs(30);
    while !ok() {
        assert!(Instant::now() < end, "gave up waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Commits `n` calls; returns the credits committed.
fn spend(gate: &Gate, n: u32) -> u64 {
    let t = gate.tenant(TENANT).expect("tenant");
    let m = gate.model(MODEL).expect("model");
    let mut spent = 0;
    let mut done = 0;
    let end = Instant::now() + Duration::from_secs(30);
    while done < n {
        assert!(Instant::now() < end, "only {done} of {n} calls granted");
        let call = Call::model(&m)
            .tenant(t)
            .input_tokens(400)
            .max_output_tokens(200)
            .tier(Tier::Interactive);
        match gate.reserve(&call) {
            Ok(h) => {
                spent += h.commit(Usage::new(400, 100)).expect("commit").0;
                done += 1;
            }
            Err(_) => std::thread::sleep(Duration::from_millis(10)),
        }
    }
    spent
}

#[test]
fn calls_of_a_lane_let_go_just_before_a_stop_are_posted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let key = dir.path().join("authority.key");
    tollgate_authority::keys::generate(&key, true).expect("key");
    let seed = std::fs::read_to_string(&key).expect("seed");
    let config = AuthorityConfig {
        admin_token: Some(ADMIN.into()),
        sidecars: vec![SidecarCredential {
            name: "pod-a".into(),
            token: Some("pod-a-token".into()),
            token_file: None,
            tenants: vec![TENANT.into()],
        }],
        leases: LeaseConfig {
            relearn_grace_secs: 0,
            ..LeaseConfig::default()
        },
        ..AuthorityConfig::default()
    };
    let auth = rt
        .block_on(tollgate_authority::server::start(ServeOptions {
            store: format!("sqlite://{}", dir.path().join("l.db").display()),
            listen: "127.0.0.1:0".parse().expect("addr"),
            http: None,
            config,
            signer_seed_hex: seed.trim().to_string(),
        }))
        .expect("authority");
    let url = format!("http://{}", auth.grpc_addr);
    let mut admin = rt.block_on(async {
        let ch = tonic::transport::Endpoint::from_shared(url.clone())
            .expect("url")
            .connect()
            .await
            .expect("connect");
        AdminServiceClient::new(ch)
    });
    rt.block_on(async {
        admin
            .create_tenant(authed(v1::CreateTenantRequest {
                tenant: TENANT.into(),
                ..Default::default()
            }))
            .await
            .expect("tenant");
        admin
            .set_price_book(authed(v1::SetPriceBookRequest {
                price_book: Some(v1::PriceBook {
                    tenant: TENANT.into(),
                    models: vec![v1::ModelPrice {
                        model: MODEL.into(),
                        pricing: Some(v1::model_price::Pricing::Tokens(v1::TokenPrice {
                            input_per_mtok_micro: 1_000_000,
                            output_per_mtok_micro: 2_000_000,
                        })),
                        max_output_tokens: 1_000,
                    }],
                    default_max_output_tokens: 1_000,
                    ..Default::default()
                }),
            }))
            .await
            .expect("price book");
        admin
            .add_grant(authed(v1::AddGrantRequest {
                grant: Some(v1::Grant {
                    tenant: TENANT.into(),
                    kind: v1::GrantKind::Purchased as i32,
                    amount_micro: 50_000_000,
                    label: "test".into(),
                    ..Default::default()
                }),
            }))
            .await
            .expect("grant");
    });
    let statement = |admin: &mut AdminServiceClient<_>| {
        rt.block_on(admin.get_statement(authed(GetStatementRequest {
            tenant: TENANT.into(),
            from_unix_ms: 0,
            to_unix_ms: 0,
        })))
        .expect("statement")
        .into_inner()
    };

    let region_dir = dir.path().join("pod-a");
    let cfg = Config {
        region: region_dir.join("region"),
        region_dir: region_dir.clone(),
        authority: url,
        sidecar_id: "pod-a".into(),
        token: Some("pod-a-token".into()),
        ca_cert: None,
        tenants: vec![TENANT.into()],
        http: "127.0.0.1:0".parse().expect("addr"),
        emergency_allowance: 0,
        lanes: 8,
        tick: Duration::from_millis(5),
        liveness_timeout: Duration::from_secs(1),
        tier_floor_permille: [0, 0, 0],
    };
    let region = cfg.region.clone();
    let sc = tollgate_sidecar::run::spawn(cfg.clone()).expect("sidecar");
    wait_for("the region to serve the tenant", || {
        Gate::attach(&region)
            .ok()
            .is_some_and(|g| g.tenant(TENANT).is_ok() && g.model(MODEL).is_ok())
    });

    // First agent: its lane is seen by the drains; its calls are posted.
    let gate = Gate::attach(&region).expect("attach");
    let mut spent = spend(&gate, 30);
    let mut calls = 30;
    wait_for("the first calls to be posted", || {
        statement(&mut admin).calls == calls
    });
    drop(gate);
    sc.stop().expect("graceful stop");

    // Restarted sidecar; an agent spends on a lane and lets go of it at once, then the
    // sidecar stops before any periodic drain may have seen that lane claimed.
    let sc = tollgate_sidecar::run::spawn(cfg).expect("sidecar again");
    let gate = Gate::attach(&region).expect("attach");
    spent += spend(&gate, 10);
    calls += 10;
    drop(gate);
    sc.stop().expect("graceful stop");

    let st = statement(&mut admin);
    assert_eq!(st.calls, calls, "every call posted exactly once");
    assert_eq!(st.total_micro, spent, "to the micro-credit");
    rt.block_on(auth.shutdown()).expect("authority shutdown");
}

//! The outbox's `next_seq` file cannot be written for a while (its temporary name is made a
//! folder) while an agent spends, and the sidecar restarts during the fault: the sidecar
//! keeps the records in the rings and retries, and once the fault clears the authority has
//! every call exactly once. (Before the fix each failed attempt left a batch file behind,
//! each holding the same records plus the newer ones, under sequences the authority had not
//! seen; the restarted sidecar replayed them all, posting those calls several times.)

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
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

fn metric(addr: SocketAddr, name: &str) -> Option<f64> {
    let mut s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    out.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
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
fn an_unwritable_next_seq_file_loses_and_doubles_no_call() {
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

    // One agent for the whole test: its lane stays in use, so every drain sees it.
    let gate = Gate::attach(&region).expect("attach");
    let mut spent = spend(&gate, 30);
    let mut calls = 30;
    wait_for("the first calls to be posted", || {
        statement(&mut admin).calls == calls
    });

    // next_seq cannot be written: every batch the sidecar seals fails to persist. (The
    // sidecar may be mid-write of its own temporary file at that moment: retry.)
    let blocker = region_dir.join("outbox").join("next_seq.tmp");
    wait_for("the fault to be injected", || {
        std::fs::create_dir(&blocker).is_ok()
    });
    spent += spend(&gate, 40);
    calls += 40;
    let errors = "tollgate_sidecar_outbox_write_errors_total";
    wait_for("three failed outbox writes", || {
        metric(sc.http_addr, errors).is_some_and(|n| n >= 3.0)
    });
    assert_eq!(
        statement(&mut admin).calls,
        30,
        "nothing was sent while it could not be persisted"
    );
    // Restart while the fault lasts: the restarted sidecar replays whatever the outbox
    // holds, and must not find batches the first one gave up on.
    sc.stop().expect("graceful stop");
    let sc = tollgate_sidecar::run::spawn(cfg).expect("sidecar again");
    wait_for(
        "the restarted sidecar's session and an empty outbox",
        || {
            metric(sc.http_addr, "tollgate_sidecar_authority_connected") == Some(1.0)
                && metric(sc.http_addr, "tollgate_sidecar_outbox_pending_batches") == Some(0.0)
        },
    );
    std::fs::remove_dir(&blocker).expect("clear the fault");
    spent += spend(&gate, 20);
    calls += 20;
    wait_for("every call to be posted", || {
        statement(&mut admin).calls >= calls
    });
    sc.stop().expect("graceful stop");

    let st = statement(&mut admin);
    assert_eq!(st.calls, calls, "every call posted exactly once");
    assert_eq!(st.total_micro, spent, "to the micro-credit");
    rt.block_on(auth.shutdown()).expect("authority shutdown");
}

//! The sidecar against a real authority (in-process, embedded store, loopback): its HTTP
//! endpoints, and a graceful stop that returns every unused lease.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use tollgate_authority::config::{Config as AuthorityConfig, LeaseConfig, SidecarCredential};
use tollgate_authority::server::ServeOptions;
use tollgate_proto::v1::admin_service_client::AdminServiceClient;
use tollgate_proto::v1::{self, GetBalanceRequest};
use tollgate_sidecar::cli::Config;

const ADMIN: &str = "admin-token";

fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    write!(s, "GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").expect("write");
    let mut out = String::new();
    s.read_to_string(&mut out).expect("read");
    let code = out
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (code, out)
}

fn authed<T>(m: T) -> tonic::Request<T> {
    let mut r = tonic::Request::new(m);
    r.metadata_mut().insert(
        "authorization",
        format!("Bearer {ADMIN}").parse().expect("header"),
    );
    r
}

#[test]
fn endpoints_serve_health_readiness_and_metrics_and_stop_returns_leases() {
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
            tenants: vec!["acme".into()],
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
                tenant: "acme".into(),
                ..Default::default()
            }))
            .await
            .expect("tenant");
        admin
            .add_grant(authed(v1::AddGrantRequest {
                grant: Some(v1::Grant {
                    tenant: "acme".into(),
                    kind: v1::GrantKind::Purchased as i32,
                    amount_micro: 50_000_000,
                    label: "test".into(),
                    ..Default::default()
                }),
            }))
            .await
            .expect("grant");
    });

    let region_dir = dir.path().join("pod-a");
    let cfg = Config {
        region: region_dir.join("region"),
        region_dir,
        authority: url,
        sidecar_id: "pod-a".into(),
        token: Some("pod-a-token".into()),
        ca_cert: None,
        tenants: vec!["acme".into()],
        http: "127.0.0.1:0".parse().expect("addr"),
        emergency_allowance: 0,
        lanes: 8,
        tick: Duration::from_millis(5),
        liveness_timeout: Duration::from_secs(1),
        tier_floor_permille: [0, 0, 0],
    };
    let sc = tollgate_sidecar::run::spawn(cfg).expect("sidecar");
    let (code, _) = get(sc.http_addr, "/healthz");
    assert_eq!(code, 200);
    // Ready once the session is up (or budget is held).
    let end = Instant::now() + Duration::from_secs(20);
    loop {
        let (code, _) = get(sc.http_addr, "/readyz");
        if code == 200 {
            break;
        }
        assert_eq!(code, 503);
        assert!(Instant::now() < end, "never ready");
        std::thread::sleep(Duration::from_millis(50));
    }
    // It leases budget for the wallet before any agent asks.
    let end = Instant::now() + Duration::from_secs(20);
    loop {
        let (_, body) = get(sc.http_addr, "/metrics");
        assert!(
            body.contains("tollgate_sidecar_authority_connected 1"),
            "{body}"
        );
        let held = rt
            .block_on(admin.get_balance(authed(GetBalanceRequest {
                tenant: "acme".into(),
            })))
            .expect("balance")
            .into_inner()
            .held_micro;
        if held > 0
            && body.contains("tollgate_sidecar_pool_available_micro_credits{limit=\"acme/wallet\"}")
        {
            break;
        }
        assert!(Instant::now() < end, "no lease held");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(get(sc.http_addr, "/nope").0, 404);
    // A graceful stop hands every unused lease back: no hold stays open at the authority.
    sc.stop().expect("graceful stop");
    let end = Instant::now() + Duration::from_secs(20);
    loop {
        let b = rt
            .block_on(admin.get_balance(authed(GetBalanceRequest {
                tenant: "acme".into(),
            })))
            .expect("balance")
            .into_inner();
        if b.held_micro == 0 {
            assert_eq!(
                b.available_micro, 50_000_000,
                "every credit is spendable again"
            );
            break;
        }
        assert!(
            Instant::now() < end,
            "holds still open after the sidecar stopped: {}",
            b.held_micro
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    rt.block_on(auth.shutdown()).expect("authority shutdown");
}

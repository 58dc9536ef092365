//! Shared harness of the sidecar's integration tests: a real authority in-process on the
//! embedded store (loopback gRPC), a tenant `acme` with a grant and a per-token price
//! book, and helpers to run sidecars and agents against it.

#![allow(dead_code)]

mod proxy;
#[allow(unused_imports)]
pub use proxy::*;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

use tollgate_authority::config::{Config as AuthorityConfig, LeaseConfig, SidecarCredential};
use tollgate_authority::server::{Running, ServeOptions};
use tollgate_client::{Call, Gate};
use tollgate_core::{Tier, Usage};
use tollgate_proto::v1::admin_service_client::AdminServiceClient;
use tollgate_proto::v1::{self, GetBalanceRequest, GetStatementRequest};
use tollgate_sidecar::cli::Config;
use tonic::transport::Channel;

pub const ADMIN: &str = "admin-token";
pub const TENANT: &str = "acme";
pub const MODEL: &str = "m";
/// Credits granted to the tenant, in micro-credits.
pub const GRANT_MICRO: u64 = 50_000_000;

pub fn authed<T>(m: T) -> tonic::Request<T> {
    let mut r = tonic::Request::new(m);
    r.metadata_mut().insert(
        "authorization",
        format!("Bearer {ADMIN}").parse().expect("header"),
    );
    r
}

/// `GET path` over HTTP/1.0: (status, whole response).
pub fn get(addr: SocketAddr, path: &str) -> (u16, String) {
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

/// One unlabelled metric of the sidecar at `addr`, if it answers.
pub fn metric(addr: SocketAddr, name: &str) -> Option<f64> {
    let mut s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    out.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

/// Polls `ok` every 20 ms for up to 30 s; fails the test naming `what`.
pub fn wait_for(what: &str, mut ok: impl FnMut() -> bool) {
    let end = Instant::now() + Duration::from_secs(30);
    while !ok() {
        assert!(Instant::now() < end, "gave up waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Commits `n` calls through `gate`; returns the credits committed.
pub fn spend(gate: &Gate, n: u32) -> u64 {
    let t = gate.tenant(TENANT).expect("tenant");
    let m = gate.model(MODEL).expect("model");
    let mut spent = 0;
    let mut done = 0;
    let end = Instant::now() + Duration::from_secs(30);
    while done < n {
        assert!(Instant::now() < end, "only {done} of {n} calls granted");
        match gate.reserve(&unit_call(&m, t)) {
            Ok(h) => {
                spent += h.commit(Usage::new(400, 100)).expect("commit").0;
                done += 1;
            }
            Err(_) => std::thread::sleep(Duration::from_millis(10)),
        }
    }
    spent
}

/// The authority with tenant `acme` (a grant of [`GRANT_MICRO`] and a price book for
/// [`MODEL`]), its admin client and the runtime they run on.
pub struct Authority {
    pub rt: tokio::runtime::Runtime,
    pub running: Running,
    pub url: String,
    pub admin: AdminServiceClient<Channel>,
}

impl Authority {
    /// Starts it with its store in `dir`; credential `pod-a` / `pod-a-token`.
    pub fn start(dir: &Path) -> Authority {
        Self::start_tenants(dir, &[(TENANT, GRANT_MICRO)])
    }

    /// Starts it with `tenants` (each with a grant of the given micro-credits and the price
    /// book for [`MODEL`]), all served by the credential `pod-a` / `pod-a-token`.
    pub fn start_tenants(dir: &Path, tenants: &[(&str, u64)]) -> Authority {
        Self::start_with(dir, tenants, |_| {})
    }

    /// [`Authority::start_tenants`] with its lease terms (ttl, grace) set by the test.
    pub fn start_with_leases(
        dir: &Path,
        tenants: &[(&str, u64)],
        leases: LeaseConfig,
    ) -> Authority {
        Self::start_with(dir, tenants, |c| c.leases = leases)
    }

    /// [`Authority::start_tenants`] with its configuration changed by `tweak` (more
    /// credentials, lease terms).
    pub fn start_with(
        dir: &Path,
        tenants: &[(&str, u64)],
        tweak: impl FnOnce(&mut AuthorityConfig),
    ) -> Authority {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let key = dir.join("authority.key");
        tollgate_authority::keys::generate(&key, true).expect("key");
        let seed = std::fs::read_to_string(&key).expect("seed");
        let mut config = AuthorityConfig {
            admin_token: Some(ADMIN.into()),
            sidecars: vec![SidecarCredential {
                name: "pod-a".into(),
                token: Some("pod-a-token".into()),
                token_file: None,
                tenants: tenants.iter().map(|t| t.0.to_string()).collect(),
            }],
            leases: LeaseConfig {
                relearn_grace_secs: 0,
                ..LeaseConfig::default()
            },
            ..AuthorityConfig::default()
        };
        tweak(&mut config);
        let running = rt
            .block_on(tollgate_authority::server::start(ServeOptions {
                store: format!("sqlite://{}", dir.join("l.db").display()),
                listen: "127.0.0.1:0".parse().expect("addr"),
                http: None,
                config,
                signer_seed_hex: seed.trim().to_string(),
            }))
            .expect("authority");
        let url = format!("http://{}", running.grpc_addr);
        let mut admin = rt.block_on(async {
            let ch = tonic::transport::Endpoint::from_shared(url.clone())
                .expect("url")
                .connect()
                .await
                .expect("connect");
            AdminServiceClient::new(ch)
        });
        for (tenant, grant) in tenants {
            rt.block_on(create_tenant(&mut admin, tenant, *grant));
        }
        Authority {
            rt,
            running,
            url,
            admin,
        }
    }

    /// The tenant's statement (all time).
    pub fn statement(&mut self) -> v1::Statement {
        self.statement_of(TENANT)
    }

    /// `tenant`'s statement (all time).
    pub fn statement_of(&mut self, tenant: &str) -> v1::Statement {
        self.rt
            .block_on(self.admin.get_statement(authed(GetStatementRequest {
                tenant: tenant.into(),
                from_unix_ms: 0,
                to_unix_ms: 0,
            })))
            .expect("statement")
            .into_inner()
    }

    /// The tenant's balance.
    pub fn balance(&mut self) -> v1::Balance {
        self.balance_of(TENANT)
    }

    /// `tenant`'s balance.
    pub fn balance_of(&mut self, tenant: &str) -> v1::Balance {
        self.rt
            .block_on(self.admin.get_balance(authed(GetBalanceRequest {
                tenant: tenant.into(),
            })))
            .expect("balance")
            .into_inner()
    }

    /// A sidecar `pod-a` for this authority: its region under `dir/pod-a`, its private
    /// state (key, outbox) under `dir/pod-a-state`.
    pub fn sidecar_config(&self, dir: &Path) -> Config {
        // The private state apart from the region, as the injector sets it up.
        Config {
            region: dir.join("pod-a").join("region"),
            state_dir: dir.join("pod-a-state"),
            authority: self.url.clone(),
            sidecar_id: "pod-a".into(),
            token: Some("pod-a-token".into()),
            ca_cert: None,
            tenants: vec![TENANT.into()],
            http: "127.0.0.1:0".parse().expect("addr"),
            emergency_allowance: 0,
            lanes: 8,
            tasks: 64,
            names: 256,
            tick: Duration::from_millis(5),
            liveness_timeout: Duration::from_secs(1),
            tier_floor_permille: [0, 0, 0],
            lane_overrun_allowance: 1_000_000,
        }
    }

    /// Sets (or replaces) a quota rule; the authority pushes the tenant's policy to its
    /// sidecars.
    pub fn set_quota(&mut self, rule: v1::QuotaRule) -> v1::TenantPolicy {
        self.rt
            .block_on(
                self.admin
                    .set_quota(authed(v1::SetQuotaRequest { rule: Some(rule) })),
            )
            .expect("set quota")
            .into_inner()
    }

    pub fn shutdown(self) {
        self.rt
            .block_on(self.running.shutdown())
            .expect("authority shutdown");
    }
}

/// Creates `tenant` with a grant of `grant` micro-credits and a per-token price book for
/// [`MODEL`] (1 credit per million input tokens, 2 per million output tokens).
async fn create_tenant(admin: &mut AdminServiceClient<Channel>, tenant: &str, grant: u64) {
    admin
        .create_tenant(authed(v1::CreateTenantRequest {
            tenant: tenant.into(),
            ..Default::default()
        }))
        .await
        .expect("tenant");
    admin
        .set_price_book(authed(v1::SetPriceBookRequest {
            price_book: Some(v1::PriceBook {
                tenant: tenant.into(),
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
                tenant: tenant.into(),
                kind: v1::GrantKind::Purchased as i32,
                amount_micro: grant,
                label: "test".into(),
                ..Default::default()
            }),
        }))
        .await
        .expect("grant");
}

/// Waits until the region at `region` serves the tenant and the model.
pub fn wait_for_region(region: &Path) {
    wait_for("the region to serve the tenant", || {
        Gate::attach(region)
            .ok()
            .is_some_and(|g| g.tenant(TENANT).is_ok() && g.model(MODEL).is_ok())
    });
}

/// The `tollgate-sidecar` binary with no `TOLLGATE_*` variable from the test's environment
/// (each flag can come from one, so a test sees only what it passes).
pub fn sidecar_bin() -> std::process::Command {
    let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_tollgate-sidecar"));
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("TOLLGATE_") {
            c.env_remove(k);
        }
    }
    c
}

/// An interactive call of 400 input tokens and at most 200 output tokens on `model`:
/// what the tests' agents make.
pub fn unit_call<'a>(
    model: &'a tollgate_client::Model,
    tenant: tollgate_client::TenantId,
) -> Call<'a> {
    Call::model(model)
        .tenant(tenant)
        .input_tokens(400)
        .max_output_tokens(200)
        .tier(Tier::Interactive)
}

/// Waits for `child` to exit on its own within 20 s (killed and `panic!(what)` otherwise),
/// and returns its output.
pub fn exits_within_20s(mut child: std::process::Child, what: &str) -> std::process::Output {
    let end = Instant::now() + Duration::from_secs(20);
    while child.try_wait().expect("wait").is_none() {
        if Instant::now() > end {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.wait_with_output().expect("output")
}

//! Test harness: start an authority, talk to it as an admin or as sidecars.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use ed25519_dalek::{Signer, SigningKey};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tollgate_authority::config::Config;
use tollgate_authority::server::{Running, ServeOptions, start};
use tollgate_proto::BatchBuilder;
use tollgate_proto::batch::RecordInput;
use tollgate_proto::v1::admin_service_client::AdminServiceClient;
use tollgate_proto::v1::sidecar_service_client::SidecarServiceClient;
use tollgate_proto::v1::{self as pb, session_down, session_up};
use tonic::transport::Channel;

pub const ADMIN: &str = "test-admin-token";
pub const SC_ACME: &str = "sc-acme-token";
pub const SC_BOTH: &str = "sc-both-token";
pub const READER_ACME: &str = "reader-acme-token";
/// Test signing seed (fixed, so a restarted server signs with the same key).
pub const SEED_HEX: &str = "0101010101010101010101010101010101010101010101010101010101010101";

/// The config file text the tests use.
pub fn config_text(relearn_secs: u64) -> String {
    format!(
        r#"
admin_token = "{ADMIN}"
webhook_secret = "whsec-test"
webhook_allow_private_targets = true
[[sidecars]]
name = "acme-pool"
token = "{SC_ACME}"
tenants = ["acme"]
[[sidecars]]
name = "shared-pool"
token = "{SC_BOTH}"
tenants = ["acme", "globex"]
[[readers]]
token = "{READER_ACME}"
tenants = ["acme"]
[leases]
ttl_secs = 30
settle_grace_secs = 5
relearn_grace_secs = {relearn_secs}
min_lease_micro = 1
"#
    )
}

pub struct Harness {
    pub running: Running,
    pub dir: tempfile::TempDir,
    pub url: String,
}

impl Harness {
    pub fn db_path(&self) -> PathBuf {
        self.dir.path().join("tollgate.db")
    }
}

/// The store a test binary runs its tests on: `tests/authority.rs` on SQLite,
/// `tests/authority_postgres.rs` on PostgreSQL (the same tests).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

const PG_URL_VAR: &str = "TOLLGATE_TEST_POSTGRES_URL";

/// True if this test must not run here: on the PostgreSQL binary without
/// `TOLLGATE_TEST_POSTGRES_URL` it prints `SKIPPED: <test>` (so a skip is never mistaken
/// for a pass), and fails instead when `TOLLGATE_TEST_REQUIRE_SERVICES=1` (CI).
pub fn skip_without_store(test: &str) -> bool {
    if crate::BACKEND == Backend::Sqlite || std::env::var(PG_URL_VAR).is_ok() {
        return false;
    }
    if std::env::var("TOLLGATE_TEST_REQUIRE_SERVICES").as_deref() == Ok("1") {
        panic!("{test}: {PG_URL_VAR} is not set but TOLLGATE_TEST_REQUIRE_SERVICES=1");
    }
    eprintln!("SKIPPED: {test} (PostgreSQL): set {PG_URL_VAR}");
    true
}

/// The store URL for the server whose files live in `dir`. On PostgreSQL each `dir` gets
/// its own schema (named in `dir/pg-schema`, so a restarted or child server finds it).
pub fn store_url(dir: &Path) -> String {
    match crate::BACKEND {
        Backend::Sqlite => format!("sqlite://{}", dir.join("tollgate.db").display()),
        Backend::Postgres => {
            let base = std::env::var(PG_URL_VAR).expect("skip_without_store checked the URL");
            let file = dir.join("pg-schema");
            let schema = std::fs::read_to_string(&file).unwrap_or_else(|_| {
                static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
                let nanos = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .subsec_nanos();
                let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let s = format!("tga_{}_{nanos}_{n}", std::process::id());
                std::fs::write(&file, &s).unwrap();
                s
            });
            let sep = if base.contains('?') { '&' } else { '?' };
            format!("{base}{sep}schema={}", schema.trim())
        }
    }
}

pub fn options(dir: &Path, relearn_secs: u64) -> ServeOptions {
    ServeOptions {
        store: store_url(dir),
        listen: "127.0.0.1:0".parse().unwrap(),
        http: Some("127.0.0.1:0".parse().unwrap()),
        config: Config::parse(&config_text(relearn_secs)).unwrap(),
        signer_seed_hex: SEED_HEX.to_string(),
    }
}

/// A harness whose ledger reads time from `clock` (to cross billing periods).
pub async fn start_harness_with_clock(clock: tollgate_ledger::ManualClock) -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let running = tollgate_authority::server::start_with_clock(
        options(dir.path(), 0),
        std::sync::Arc::new(clock),
    )
    .await
    .unwrap();
    let url = format!("http://{}", running.grpc_addr);
    Harness { running, dir, url }
}

pub async fn start_harness() -> Harness {
    if let Ok(f) = std::env::var("TOLLGATE_TEST_LOG") {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(f))
            .with_test_writer()
            .try_init();
    }
    let dir = tempfile::tempdir().unwrap();
    let running = start(options(dir.path(), 0)).await.unwrap();
    let url = format!("http://{}", running.grpc_addr);
    Harness { running, dir, url }
}

pub fn req<T>(msg: T, token: Option<&str>) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    if let Some(t) = token {
        r.metadata_mut()
            .insert("authorization", format!("Bearer {t}").parse().unwrap());
    }
    r
}

pub async fn admin(url: &str) -> AdminServiceClient<Channel> {
    AdminServiceClient::connect(url.to_string()).await.unwrap()
}

pub const MODEL: &str = "m1";

/// Creates `tenant` with a purchased grant of `credits` and a per-token price book where
/// one input token costs one micro-credit.
pub async fn setup_tenant(url: &str, tenant: &str, credits: u64) {
    let mut a = admin(url).await;
    a.create_tenant(req(
        pb::CreateTenantRequest {
            tenant: tenant.into(),
            display_name: format!("{tenant} corp"),
            deduction_order: 0,
        },
        Some(ADMIN),
    ))
    .await
    .unwrap();
    if credits > 0 {
        a.add_grant(req(
            pb::AddGrantRequest {
                grant: Some(pb::Grant {
                    tenant: tenant.into(),
                    kind: pb::GrantKind::Purchased as i32,
                    amount_micro: credits * 1_000_000,
                    priority: 10,
                    ..Default::default()
                }),
            },
            Some(ADMIN),
        ))
        .await
        .unwrap();
    }
    a.set_price_book(req(
        pb::SetPriceBookRequest {
            price_book: Some(pb::PriceBook {
                tenant: tenant.into(),
                models: vec![pb::ModelPrice {
                    model: MODEL.into(),
                    pricing: Some(pb::model_price::Pricing::Tokens(pb::TokenPrice {
                        input_per_mtok_micro: 1_000_000,
                        output_per_mtok_micro: 2_000_000,
                    })),
                    max_output_tokens: 0,
                }],
                default_max_output_tokens: 1000,
                ..Default::default()
            }),
        },
        Some(ADMIN),
    ))
    .await
    .unwrap();
}

/// Sets an enforced quota rule `id` of `max_micro` on `limit` (as the admin).
pub async fn set_quota(url: &str, id: &str, limit: pb::LimitKey, max_micro: u64) {
    admin(url)
        .await
        .set_quota(req(
            pb::SetQuotaRequest {
                rule: Some(pb::QuotaRule {
                    id: id.into(),
                    limit: Some(limit),
                    max_micro,
                    shadow: false,
                }),
            },
            Some(ADMIN),
        ))
        .await
        .unwrap();
}

pub async fn balance(url: &str, tenant: &str) -> pb::Balance {
    admin(url)
        .await
        .get_balance(req(
            pb::GetBalanceRequest {
                tenant: tenant.into(),
            },
            Some(ADMIN),
        ))
        .await
        .unwrap()
        .into_inner()
}

pub async fn statement(url: &str, tenant: &str) -> pb::Statement {
    admin(url)
        .await
        .get_statement(req(
            pb::GetStatementRequest {
                tenant: tenant.into(),
                ..Default::default()
            },
            Some(ADMIN),
        ))
        .await
        .unwrap()
        .into_inner()
}

/// A sidecar client: registration, session stream, signing key.
pub struct Sidecar {
    pub id: String,
    pub key: SigningKey,
    pub up: mpsc::Sender<pb::SessionUp>,
    pub down: tonic::Streaming<pb::SessionDown>,
    pub registered: pb::RegisterResponse,
}

pub fn key_for(id: &str) -> SigningKey {
    let mut seed = [7u8; 32];
    for (i, b) in id.bytes().enumerate() {
        seed[i % 32] ^= b;
    }
    SigningKey::from_bytes(&seed)
}

pub async fn register(
    url: &str,
    id: &str,
    token: &str,
    tenants: &[&str],
    held: Vec<pb::HeldLease>,
) -> Result<pb::RegisterResponse, tonic::Status> {
    let mut c = SidecarServiceClient::connect(url.to_string())
        .await
        .unwrap();
    c.register(req(
        pb::RegisterRequest {
            sidecar_id: id.into(),
            tenants: tenants.iter().map(|t| t.to_string()).collect(),
            public_key: key_for(id).verifying_key().to_bytes().to_vec(),
            held_leases: held,
            next_seq: 1,
            agent: "test".into(),
        },
        Some(token),
    ))
    .await
    .map(|r| r.into_inner())
}

impl Sidecar {
    pub async fn connect(url: &str, id: &str, token: &str, tenants: &[&str]) -> Sidecar {
        Sidecar::connect_holding(url, id, token, tenants, Vec::new()).await
    }

    pub async fn connect_holding(
        url: &str,
        id: &str,
        token: &str,
        tenants: &[&str],
        held: Vec<pb::HeldLease>,
    ) -> Sidecar {
        let registered = register(url, id, token, tenants, held).await.unwrap();
        let mut c = SidecarServiceClient::connect(url.to_string())
            .await
            .unwrap()
            .max_decoding_message_size(64 * 1024 * 1024);
        let (up, rx) = mpsc::channel(256);
        let mut r = req(ReceiverStream::new(rx), Some(token));
        r.metadata_mut()
            .insert(tollgate_proto::SIDECAR_ID_HEADER, id.parse().unwrap());
        let down = c.session(r).await.unwrap().into_inner();
        Sidecar {
            id: id.into(),
            key: key_for(id),
            up,
            down,
            registered,
        }
    }

    /// A signed batch of `n` records of `tenant`, each 100 input tokens (100 micro).
    pub fn batch(&self, seq: u64, tenant: &str, n: usize) -> pb::UsageBatch {
        let mut b = BatchBuilder::new(seq, 1);
        for i in 0..n {
            b.push(&RecordInput {
                tenant,
                agent: if i % 2 == 0 { "agent-a" } else { "agent-b" },
                agent_instance: if i % 2 == 0 {
                    "pod/1/lane0"
                } else {
                    "pod/2/lane0"
                },
                model: MODEL,
                feature: "chat",
                input_tokens: 100,
                client_rated_micro: 100,
                calls: 1,
                at_unix_ms: 1_800_000_000_000,
                ..Default::default()
            });
        }
        let mut batch = b.finish();
        self.sign(&mut batch);
        batch
    }

    /// A signed batch of these records.
    pub fn batch_of(&self, seq: u64, records: &[RecordInput<'_>]) -> pb::UsageBatch {
        let mut b = BatchBuilder::new(seq, 1);
        for r in records {
            b.push(r);
        }
        let mut batch = b.finish();
        self.sign(&mut batch);
        batch
    }

    /// Sends a signed batch of these records and waits for its acknowledgement, which
    /// must say accepted.
    pub async fn post(&mut self, seq: u64, records: &[RecordInput<'_>]) -> pb::BatchAck {
        self.post_seeing(seq, records).await.0
    }

    /// [`Sidecar::post`], also returning the messages that came before the acknowledgement.
    pub async fn post_seeing(
        &mut self,
        seq: u64,
        records: &[RecordInput<'_>],
    ) -> (pb::BatchAck, Vec<session_down::Msg>) {
        let b = self.batch_of(seq, records);
        self.send(session_up::Msg::Batch(b)).await;
        let mut seen = Vec::new();
        loop {
            match self.next().await {
                session_down::Msg::Ack(ack) => {
                    assert_eq!(ack.status, pb::AckStatus::Accepted as i32, "{ack:?}");
                    return (ack, seen);
                }
                m => seen.push(m),
            }
        }
    }

    /// Leases `micro` of the tenant's wallet (one demand; the grant it brings).
    pub async fn lease_wallet(&mut self, tenant: &str, micro: u64) -> pb::Lease {
        self.demand(pb::LimitKey::wallet(tenant), micro, 0).await;
        self.next_grant().await
    }

    /// A round trip: everything sent before it was handled when this returns.
    pub async fn sync(&mut self) {
        self.send(session_up::Msg::Heartbeat(pb::Heartbeat { unix_ms: 0 }))
            .await;
        self.next_matching(|m| match m {
            session_down::Msg::Heartbeat(_) => Some(()),
            _ => None,
        })
        .await;
    }

    pub fn sign(&self, batch: &mut pb::UsageBatch) {
        let msg = tollgate_proto::signing::batch_signing_bytes(&self.id, batch);
        batch.signature = self.key.sign(&msg).to_bytes().to_vec();
    }

    pub async fn send(&self, msg: session_up::Msg) {
        self.up
            .send(pb::SessionUp { msg: Some(msg) })
            .await
            .unwrap();
    }

    pub async fn demand(&self, limit: pb::LimitKey, desired: u64, held: u64) {
        self.send(session_up::Msg::Demand(pb::DemandReport {
            demands: vec![pb::LimitDemand {
                limit: Some(limit),
                burn_per_sec_micro: 1,
                desired_micro: desired,
                held_micro: held,
            }],
            denials: Vec::new(),
        }))
        .await;
    }

    /// The next downstream message (a liveness guard of 30 s, not a timing assertion).
    pub async fn next(&mut self) -> session_down::Msg {
        if std::env::var("TOLLGATE_TEST_LOG").is_ok() {
            eprintln!("[{}] waiting for a message", self.id);
        }
        let m = tokio::time::timeout(Duration::from_secs(30), self.down.message())
            .await
            .expect("no message from the authority within 30 s")
            .expect("session failed")
            .expect("session ended");
        m.msg.expect("empty message")
    }

    /// Skips messages until one matches.
    pub async fn next_matching<T>(
        &mut self,
        mut f: impl FnMut(session_down::Msg) -> Option<T>,
    ) -> T {
        loop {
            if let Some(t) = f(self.next().await) {
                return t;
            }
        }
    }

    pub async fn next_ack(&mut self) -> pb::BatchAck {
        self.next_matching(|m| match m {
            session_down::Msg::Ack(a) => Some(a),
            _ => None,
        })
        .await
    }

    /// `rounds` times: ask for `want` more on each limit (reporting what this sidecar
    /// holds so far), then a heartbeat, whose echo means the demands were decided. Returns
    /// every lease granted.
    pub async fn lease_rounds(
        &mut self,
        limits: &[(pb::LimitKey, u64)],
        rounds: usize,
    ) -> Vec<pb::Lease> {
        let mut held: std::collections::HashMap<String, u64> = Default::default();
        let mut leases = Vec::new();
        for _ in 0..rounds {
            for (limit, want) in limits {
                let h = held.get(&limit.canonical()).copied().unwrap_or(0);
                self.demand(limit.clone(), *want, h).await;
            }
            self.send(session_up::Msg::Heartbeat(pb::Heartbeat { unix_ms: 0 }))
                .await;
            loop {
                match self.next().await {
                    session_down::Msg::Grant(g) => {
                        let l = g.lease.expect("a grant carries a lease");
                        let key = l.limit.as_ref().map(pb::LimitKey::canonical);
                        *held.entry(key.unwrap_or_default()).or_default() += l.amount_micro;
                        leases.push(l);
                    }
                    session_down::Msg::Heartbeat(_) => break,
                    _ => {}
                }
            }
        }
        leases
    }

    /// Total granted per limit (canonical key) over `leases`.
    pub fn totals(
        leases: impl IntoIterator<Item = pb::Lease>,
    ) -> std::collections::HashMap<String, u64> {
        let mut per_limit = std::collections::HashMap::new();
        for l in leases {
            let key = l
                .limit
                .as_ref()
                .map(pb::LimitKey::canonical)
                .unwrap_or_default();
            *per_limit.entry(key).or_default() += l.amount_micro;
        }
        per_limit
    }

    pub async fn next_grant(&mut self) -> pb::Lease {
        self.next_matching(|m| match m {
            session_down::Msg::Grant(g) => g.lease,
            _ => None,
        })
        .await
    }
}

/// One call's record, for [`Sidecar::post`]: `tenant`'s call on `model`, of an agent named
/// `agent` (instance `pod/<agent>/lane0`), `input` tokens in, the client's amount `client`.
pub fn call<'a>(
    tenant: &'a str,
    agent: &'a str,
    model: &'a str,
    input: u64,
    client: u64,
) -> RecordInput<'a> {
    RecordInput {
        tenant,
        agent,
        agent_instance: "pod/1/lane0",
        model,
        input_tokens: input,
        client_rated_micro: client,
        calls: 1,
        at_unix_ms: 1_800_000_000_000,
        ..Default::default()
    }
}

/// An admin client with the admin token on every call.
pub struct AdminClient(pub AdminServiceClient<Channel>);

impl AdminClient {
    pub async fn connect(url: &str) -> AdminClient {
        AdminClient(admin(url).await)
    }

    pub async fn tenant(&mut self, tenant: &str) {
        self.0
            .create_tenant(req(
                pb::CreateTenantRequest {
                    tenant: tenant.into(),
                    ..Default::default()
                },
                Some(ADMIN),
            ))
            .await
            .unwrap();
    }

    pub async fn book(
        &mut self,
        tenant: &str,
        request_price_micro: u64,
        models: Vec<pb::ModelPrice>,
    ) {
        self.0
            .set_price_book(req(
                pb::SetPriceBookRequest {
                    price_book: Some(pb::PriceBook {
                        tenant: tenant.into(),
                        models,
                        request_price_micro,
                        default_max_output_tokens: 1000,
                        ..Default::default()
                    }),
                },
                Some(ADMIN),
            ))
            .await
            .unwrap();
    }

    pub async fn grant(&mut self, g: pb::Grant) -> pb::Grant {
        self.0
            .add_grant(req(pb::AddGrantRequest { grant: Some(g) }, Some(ADMIN)))
            .await
            .unwrap()
            .into_inner()
    }

    pub async fn plan(&mut self, p: pb::Plan) {
        self.0
            .set_plan(req(pb::SetPlanRequest { plan: Some(p) }, Some(ADMIN)))
            .await
            .unwrap();
    }

    pub async fn pack(&mut self, tenant: &str, credits: u64, price_micro: u64, currency: &str) {
        self.0
            .set_credit_pack(req(
                pb::SetCreditPackRequest {
                    pack: Some(pb::CreditPack {
                        tenant: tenant.into(),
                        credits_micro: credits * 1_000_000,
                        price_micro,
                        currency: currency.into(),
                    }),
                },
                Some(ADMIN),
            ))
            .await
            .unwrap();
    }

    pub async fn statement(&mut self, tenant: &str) -> pb::Statement {
        self.0
            .get_statement(req(
                pb::GetStatementRequest {
                    tenant: tenant.into(),
                    ..Default::default()
                },
                Some(ADMIN),
            ))
            .await
            .unwrap()
            .into_inner()
    }

    pub async fn balance(&mut self, tenant: &str) -> pb::Balance {
        self.0
            .get_balance(req(
                pb::GetBalanceRequest {
                    tenant: tenant.into(),
                },
                Some(ADMIN),
            ))
            .await
            .unwrap()
            .into_inner()
    }
}

/// A model's price entry.
pub fn model(name: &str, pricing: pb::model_price::Pricing) -> pb::ModelPrice {
    pb::ModelPrice {
        model: name.into(),
        pricing: Some(pricing),
        max_output_tokens: 0,
    }
}

/// The line of `key` in a statement breakdown.
pub fn line<'a>(lines: &'a [pb::StatementLine], key: &str) -> &'a pb::StatementLine {
    lines
        .iter()
        .find(|l| l.key == key)
        .unwrap_or_else(|| panic!("no line {key:?} in {lines:?}"))
}

/// The `tollgate ctl` command line, parsed as the binary parses it.
#[derive(Debug, clap::Parser)]
pub struct CtlCli {
    #[command(flatten)]
    pub ctl: tollgate_authority::cli::ctl::CtlArgs,
}

/// `tollgate ctl <args>` against `url` with the admin token, as typed.
pub async fn ctl(url: &str, args: &[&str]) -> anyhow::Result<String> {
    use clap::Parser;
    let mut argv = vec!["ctl", "--authority", url, "--admin-token", ADMIN];
    argv.extend_from_slice(args);
    tollgate_authority::cli::ctl::execute(CtlCli::try_parse_from(argv)?.ctl).await
}

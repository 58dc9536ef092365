//! Writes the committed seeds of `usage_batch` and `admin_requests` (run without the
//! fuzzer: `cargo run --example make_seeds` in this directory): batches as the sidecar's
//! `BatchBuilder` makes them, signed with the key the target registers, and one realistic
//! body per admin request type (the selector byte first).

use std::path::Path;

use ed25519_dalek::{Signer, SigningKey};
use prost::Message;
use tollgate_proto::batch::{BatchBuilder, RecordInput};
use tollgate_proto::signing::batch_signing_bytes;
use tollgate_proto::v1 as pb;
use tollgate_proto::v1::{Initiator, Tier};

fn signed(mut b: pb::UsageBatch, sidecar: &str) -> Vec<u8> {
    let key = SigningKey::from_bytes(&[7u8; 32]);
    b.signature = key
        .sign(&batch_signing_bytes(sidecar, &b))
        .to_bytes()
        .to_vec();
    b.encode_to_vec()
}

fn batches() -> Vec<(&'static str, Vec<u8>)> {
    let mut b = BatchBuilder::new(1, 1_700_000_000_000);
    b.push(&RecordInput {
        tenant: "acme",
        agent_instance: "bot-1",
        model: "gpt-small",
        feature: "chat",
        task: "t-1",
        tier: Some(Tier::Interactive),
        initiator: Some(Initiator::Human),
        input_tokens: 1200,
        output_tokens: 300,
        price_book_version: 1,
        client_rated_micro: 1800,
        calls: 1,
        at_unix_ms: 1_700_000_000_000,
        ..Default::default()
    });
    b.push(&RecordInput {
        tenant: "beta",
        agent_instance: "bot-2",
        model: "agent-actions",
        tier: Some(Tier::Background),
        initiator: Some(Initiator::Agent),
        input_tokens: 20_001,
        calls: 40,
        aggregate: true,
        outcomes: 2,
        ..Default::default()
    });
    let two = b.finish();
    let mut out_of_scope = BatchBuilder::new(7, 0);
    out_of_scope.push(&RecordInput {
        tenant: "mallory",
        ..Default::default()
    });
    let mut bad_index = two.clone();
    bad_index.records[0].model = 99;
    let mut bad_tier = two.clone();
    bad_tier.records[1].tier = 42;
    vec![
        ("two_records", signed(two.clone(), "sc-fuzz")),
        ("empty", signed(BatchBuilder::new(2, 0).finish(), "sc-fuzz")),
        ("other_sidecar", signed(two.clone(), "sc-other")),
        ("out_of_scope", signed(out_of_scope.finish(), "sc-fuzz")),
        ("bad_index", signed(bad_index, "sc-fuzz")),
        ("bad_tier", signed(bad_tier, "sc-fuzz")),
        ("unsigned", two.encode_to_vec()),
    ]
}

fn limit(tenant: &str, scope: pb::Scope, window: pb::Window) -> Option<pb::LimitKey> {
    Some(pb::LimitKey {
        tenant: tenant.into(),
        scope: scope as i32,
        window: window as i32,
        agent: if scope == pb::Scope::Agent {
            "bot-1".into()
        } else {
            String::new()
        },
        task: String::new(),
        tier: if scope == pb::Scope::Tier {
            pb::Tier::Background as i32
        } else {
            0
        },
    })
}

fn admin() -> Vec<(&'static str, Vec<u8>)> {
    let book = pb::PriceBook {
        tenant: "acme".into(),
        version: 0,
        request_price_micro: 40_000,
        default_max_output_tokens: 1024,
        models: vec![
            pb::ModelPrice {
                model: "gpt-small".into(),
                max_output_tokens: 4096,
                pricing: Some(pb::model_price::Pricing::Tokens(pb::TokenPrice {
                    input_per_mtok_micro: 1_000_000,
                    output_per_mtok_micro: 2_000_000,
                })),
            },
            pb::ModelPrice {
                model: "agent-actions".into(),
                max_output_tokens: 0,
                pricing: Some(pb::model_price::Pricing::Actions(pb::ActionPrice {
                    tokens_per_action: 10_000,
                    per_action_micro: 20_000_000,
                })),
            },
            pb::ModelPrice {
                model: "mini".into(),
                max_output_tokens: 0,
                pricing: Some(pb::model_price::Pricing::Requests(pb::RequestPrice {
                    multiplier_permille: 330,
                    agent_initiated_free: true,
                })),
            },
            pb::ModelPrice {
                model: "ticket".into(),
                max_output_tokens: 0,
                pricing: Some(pb::model_price::Pricing::Outcome(pb::OutcomePrice {
                    per_outcome_micro: 990_000,
                })),
            },
        ],
        ..Default::default()
    };
    let t = || "acme".to_string();
    let with = |which: u8, body: Vec<u8>| {
        let mut v = vec![which];
        v.extend(body);
        v
    };
    vec![
        (
            "00_create_tenant",
            with(
                0,
                pb::CreateTenantRequest {
                    tenant: t(),
                    display_name: "Acme Corp".into(),
                    deduction_order: 0,
                }
                .encode_to_vec(),
            ),
        ),
        (
            "02_add_grant",
            with(
                2,
                pb::AddGrantRequest {
                    grant: Some(pb::Grant {
                        tenant: t(),
                        kind: pb::GrantKind::Trial as i32,
                        amount_micro: 500_000_000,
                        priority: 1,
                        expires_unix_ms: 1_800_000_000_000,
                        label: "trial".into(),
                        ..Default::default()
                    }),
                }
                .encode_to_vec(),
            ),
        ),
        (
            "03_list_grants",
            with(3, pb::ListGrantsRequest { tenant: t() }.encode_to_vec()),
        ),
        (
            "04_set_price_book",
            with(
                4,
                pb::SetPriceBookRequest {
                    price_book: Some(book),
                }
                .encode_to_vec(),
            ),
        ),
        (
            "06_set_plan",
            with(
                6,
                pb::SetPlanRequest {
                    plan: Some(pb::Plan {
                        tenant: t(),
                        included_micro: 100_000_000,
                        hard_cap_micro: 900_000_000,
                        ..Default::default()
                    }),
                }
                .encode_to_vec(),
            ),
        ),
        (
            "08_set_quota_agent",
            with(
                8,
                pb::SetQuotaRequest {
                    rule: Some(pb::QuotaRule {
                        id: "acme-bot-hour".into(),
                        limit: limit("acme", pb::Scope::Agent, pb::Window::Hour),
                        max_micro: 5_000_000,
                        shadow: false,
                    }),
                }
                .encode_to_vec(),
            ),
        ),
        (
            "08_set_quota_tier",
            with(
                8,
                pb::SetQuotaRequest {
                    rule: Some(pb::QuotaRule {
                        id: "acme-bg-month".into(),
                        limit: limit("acme", pb::Scope::Tier, pb::Window::Month),
                        max_micro: 50_000_000,
                        shadow: true,
                    }),
                }
                .encode_to_vec(),
            ),
        ),
        (
            "09_delete_quota",
            with(
                9,
                pb::DeleteQuotaRequest {
                    tenant: t(),
                    rule_id: "acme-bot-hour".into(),
                }
                .encode_to_vec(),
            ),
        ),
        (
            "11_set_tier_floor",
            with(
                11,
                pb::SetTierFloorRequest {
                    tenant: t(),
                    floor: Some(pb::TierFloor {
                        tier: pb::Tier::Scheduler as i32,
                        floor_micro: 0,
                        floor_permille: 200,
                        shadow: false,
                    }),
                }
                .encode_to_vec(),
            ),
        ),
        (
            "12_set_alert_rule",
            with(
                12,
                pb::SetAlertRuleRequest {
                    rule: Some(pb::AlertRule {
                        id: "acme-80".into(),
                        tenant: t(),
                        condition: Some(pb::alert_rule::Condition::PercentUsedPermille(800)),
                        webhook_url: "https://hooks.example.com/tollgate".into(),
                        webhook_secret: "s3cret".into(),
                        has_webhook_secret: false,
                    }),
                }
                .encode_to_vec(),
            ),
        ),
        (
            "16_get_statement",
            with(
                16,
                pb::GetStatementRequest {
                    tenant: t(),
                    from_unix_ms: 1_700_000_000_000,
                    to_unix_ms: 1_700_086_400_000,
                }
                .encode_to_vec(),
            ),
        ),
        (
            "17_export_audit",
            with(
                17,
                pb::ExportAuditRequest {
                    tenant: t(),
                    after_seq: u64::MAX,
                    limit: 100,
                    jsonl: true,
                }
                .encode_to_vec(),
            ),
        ),
        (
            "18_verify_audit",
            with(18, pb::VerifyAuditRequest { tenant: t() }.encode_to_vec()),
        ),
    ]
}

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("seeds");
    for (dir, seeds) in [("usage_batch", batches()), ("admin_requests", admin())] {
        let dir = root.join(dir);
        std::fs::create_dir_all(&dir).expect("seed dir");
        for (name, bytes) in seeds {
            std::fs::write(dir.join(name), &bytes).expect("write seed");
            println!("{}/{name}: {} bytes", dir.display(), bytes.len());
        }
    }
}

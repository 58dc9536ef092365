//! The demo's tenant, set up through the authority's admin API exactly as an operator would
//! with `tollgate ctl`: a price book over several models, a trial grant that pays first, a
//! purchased grant that pays next, and a plan whose overage is capped.

use tollgate_proto::v1::admin_service_client::AdminServiceClient;
use tollgate_proto::v1::{
    self, AddGrantRequest, CreateTenantRequest, CreditPack, Grant, GrantKind, Plan, ResetPeriod,
    SetCreditPackRequest, SetPlanRequest, SetPriceBookRequest, SetQuotaRequest,
};
use tonic::transport::Channel;

/// Micro-credits per credit.
pub const CREDIT: u64 = 1_000_000;

/// The demo tenant.
pub const TENANT: &str = "acme";

/// Credits with two decimals for progress lines (display only: the micro-credit integer
/// rounded half up; statements carry the exact values).
pub fn cr(micro: u64) -> String {
    let hundredths = micro.div_ceil(5_000) / 2;
    format!("{}.{:02}", hundredths / 100, hundredths % 100)
}

/// The demo tenant's money, sized from the fleet's expected burn so that every phase
/// (trial, purchased, overage, cap) happens within the run.
#[derive(Debug, Clone, Copy)]
pub struct Budget {
    /// Trial grant (priority 0: pays first).
    pub trial: u64,
    /// Purchased grant (priority 10: pays second).
    pub purchased: u64,
    /// Hard cap on the plan's charge for the period (the overage past the grants).
    pub hard_cap: u64,
}

impl Budget {
    /// A budget for a fleet expected to burn `expected_total` micro-credits over the run:
    /// the trial covers about a quarter, purchased credits the next third, and the overage
    /// cap stops spending at about 80 %, so the last part of the run shows capped denials.
    pub fn for_expected_burn(expected_total: u64) -> Budget {
        let trial = (expected_total / 4).max(CREDIT);
        let purchased = (expected_total / 3).max(CREDIT);
        let hard_cap = (expected_total / 100 * 80)
            .saturating_sub(trial + purchased)
            .max(CREDIT);
        Budget {
            trial,
            purchased,
            hard_cap,
        }
    }
}

/// The models the fleet uses and their prices (per-token, per-action, per-request and per
/// outcome).
pub fn price_book(tenant: &str) -> v1::PriceBook {
    use v1::model_price::Pricing;
    let tokens = |model: &str, input: u64, output: u64, max_out: u64| v1::ModelPrice {
        model: model.into(),
        pricing: Some(Pricing::Tokens(v1::TokenPrice {
            input_per_mtok_micro: input,
            output_per_mtok_micro: output,
        })),
        max_output_tokens: max_out,
    };
    v1::PriceBook {
        tenant: tenant.into(),
        version: 0,
        models: vec![
            // credits per million tokens, input / output
            tokens("frontier-large", 15 * CREDIT, 60 * CREDIT, 1_000),
            tokens("balanced-medium", 3 * CREDIT, 12 * CREDIT, 1_000),
            tokens("fast-small", CREDIT / 2, 2 * CREDIT, 1_000),
            v1::ModelPrice {
                model: "code-actions".into(),
                pricing: Some(Pricing::Actions(v1::ActionPrice {
                    tokens_per_action: 10_000,
                    per_action_micro: 20_000,
                })),
                max_output_tokens: 2_000,
            },
            // A resolved ticket, $0.99 of credits each (outcome pricing, as Intercom's).
            v1::ModelPrice {
                model: crate::fleet::RESOLUTION_MODEL.into(),
                pricing: Some(Pricing::Outcome(v1::OutcomePrice {
                    per_outcome_micro: 990_000,
                })),
                max_output_tokens: 0,
            },
            v1::ModelPrice {
                model: "premium-requests".into(),
                pricing: Some(Pricing::Requests(v1::RequestPrice {
                    multiplier_permille: 1_000,
                    agent_initiated_free: true,
                })),
                max_output_tokens: 1_000,
            },
        ],
        effective_unix_ms: 0,
        request_price_micro: 40_000,
        default_max_output_tokens: 1_000,
    }
}

fn authed<T>(msg: T, token: &str) -> anyhow::Result<tonic::Request<T>> {
    let mut r = tonic::Request::new(msg);
    r.metadata_mut().insert(
        tollgate_proto::AUTHORIZATION,
        format!("Bearer {token}").parse()?,
    );
    Ok(r)
}

/// Creates the tenant, its price book, grants and plan.
pub async fn tenant(
    admin: &mut AdminServiceClient<Channel>,
    token: &str,
    tenant: &str,
    budget: Budget,
    now_unix_ms: u64,
) -> anyhow::Result<()> {
    admin
        .create_tenant(authed(
            CreateTenantRequest {
                tenant: tenant.into(),
                display_name: "Acme Agents Inc.".into(),
                deduction_order: v1::DeductionOrder::Default as i32,
            },
            token,
        )?)
        .await?;
    admin
        .set_price_book(authed(
            SetPriceBookRequest {
                price_book: Some(price_book(tenant)),
            },
            token,
        )?)
        .await?;
    let grant = |kind: GrantKind, amount: u64, priority: i32, expires: u64, label: &str| Grant {
        grant_id: String::new(),
        tenant: tenant.into(),
        kind: kind as i32,
        amount_micro: amount,
        priority,
        starts_unix_ms: 0,
        expires_unix_ms: expires,
        reset: ResetPeriod::None as i32,
        label: label.into(),
        remaining_micro: 0,
    };
    let fortnight = now_unix_ms + 14 * 24 * 3600 * 1000;
    for g in [
        grant(
            GrantKind::Trial,
            budget.trial,
            0,
            fortnight,
            "trial credits",
        ),
        grant(
            GrantKind::Purchased,
            budget.purchased,
            10,
            0,
            "purchased pack",
        ),
    ] {
        admin
            .add_grant(authed(AddGrantRequest { grant: Some(g) }, token)?)
            .await?;
    }
    admin
        .set_plan(authed(
            SetPlanRequest {
                plan: Some(Plan {
                    tenant: tenant.into(),
                    included_micro: 0,
                    hard_cap_micro: budget.hard_cap,
                    hard_cap_shadow: false,
                    included_requests: 0,
                    // Per-request usage past the grants is billed (and capped) at list price.
                    overage_request_price_micro: price_book(tenant).request_price_micro,
                    consumption_floor_micro: 0,
                    ..Plan::default()
                }),
            },
            token,
        )?)
        .await?;
    // Credits are bought in packs (Agentforce's price: 100,000 credits for $500), so the
    // statement shows dollars beside credits.
    admin
        .set_credit_pack(authed(
            SetCreditPackRequest {
                pack: Some(CreditPack {
                    tenant: tenant.into(),
                    credits_micro: PACK_CREDITS * 1_000_000,
                    price_micro: PACK_PRICE_MICRO,
                    currency: PACK_CURRENCY.into(),
                }),
            },
            token,
        )?)
        .await?;
    Ok(())
}

/// The demo tenant's credit pack: 100,000 credits for 500 US dollars.
pub const PACK_CREDITS: u64 = 100_000;
/// The pack's price in micro-units of its currency.
pub const PACK_PRICE_MICRO: u64 = 500_000_000;
/// The pack's currency.
pub const PACK_CURRENCY: &str = "USD";

/// Micro-units of a currency as `USD 0.60` (rounded to the cent, half up).
pub fn money(micro: u64, currency: &str) -> String {
    let cents = micro.div_ceil(5_000) / 2;
    format!("{currency} {}.{:02}", cents / 100, cents % 100)
}

/// A per-minute quota on the tenant (optional scenario knob).
pub async fn minute_quota(
    admin: &mut AdminServiceClient<Channel>,
    token: &str,
    tenant: &str,
    max_micro: u64,
) -> anyhow::Result<()> {
    admin
        .set_quota(authed(
            SetQuotaRequest {
                rule: Some(v1::QuotaRule {
                    id: format!("{tenant}-per-minute"),
                    limit: Some(v1::LimitKey::tenant_window(tenant, v1::Window::Minute)),
                    max_micro,
                    shadow: false,
                }),
            },
            token,
        )?)
        .await?;
    Ok(())
}

//! Admin API request bodies: the first byte picks one of the admin service's request
//! types, the rest is decoded as that protobuf message (as tonic decodes it before the
//! handler runs) and fed through the public wire-to-core conversions the handlers use
//! (`tollgate_authority::convert`, `TenantId::new`, `LimitKey::canonical`).
//!
//! What must hold: nothing panics; what decodes re-encodes to the same message; a price
//! book the conversion accepts survives core -> wire -> core unchanged.
//! The handlers' own checks (rule ids, limit keys) are private to `admin_svc` and not
//! reached here.
#![no_main]

use libfuzzer_sys::fuzz_target;
use prost::Message;
use tollgate_authority::convert;
use tollgate_ledger::TenantId;
use tollgate_proto::v1 as pb;

/// Decodes `bytes` as `M`; when it decodes, its encoding decodes to the same message.
fn decode<M: Message + Default + PartialEq + std::fmt::Debug>(bytes: &[u8]) -> Option<M> {
    let m = M::decode(bytes).ok()?;
    let again = M::decode(m.encode_to_vec().as_slice()).expect("our own encoding decodes");
    assert_eq!(again, m, "decode -> encode -> decode changed the message");
    Some(m)
}

/// The handlers' tenant check: the wire rule, then the ledger's id type.
fn tenant(field: &str, s: &str) {
    if let Ok(s) = convert::tenant_id(field, s) {
        let _ = TenantId::new(s);
    }
}

fn limit(l: &Option<pb::LimitKey>) {
    if let Some(l) = l {
        tenant("limit.tenant", &l.tenant);
        let _ = convert::plain_id("limit.agent", &l.agent);
        let _ = convert::plain_id("limit.task", &l.task);
        let _ = convert::horizon(l.window);
        let _ = convert::tier(l.tier);
        assert!(!l.canonical().is_empty());
    }
}

fn price_book(b: &pb::PriceBook) {
    tenant("price_book.tenant", &b.tenant);
    let Ok(spec) = convert::price_book_spec(b) else {
        return;
    };
    let wire = convert::price_book_to_wire(&b.tenant, &spec, 0);
    let back = convert::price_book_spec(&wire).expect("our own wire form converts back");
    assert_eq!(back, spec, "core -> wire -> core changed the price book");
}

fuzz_target!(|data: &[u8]| {
    let Some((&which, body)) = data.split_first() else {
        return;
    };
    match which % 19 {
        0 => {
            if let Some(r) = decode::<pb::CreateTenantRequest>(body) {
                tenant("tenant", &r.tenant);
                let _ = convert::plain_id("display_name", &r.display_name);
            }
        }
        1 => {
            let _ = decode::<pb::ListTenantsRequest>(body);
        }
        2 => {
            if let Some(r) = decode::<pb::AddGrantRequest>(body)
                && let Some(g) = &r.grant
            {
                tenant("grant.tenant", &g.tenant);
                let _ = convert::plain_id("grant.label", &g.label);
            }
        }
        3 => {
            if let Some(r) = decode::<pb::ListGrantsRequest>(body) {
                tenant("tenant", &r.tenant);
            }
        }
        4 => {
            if let Some(r) = decode::<pb::SetPriceBookRequest>(body)
                && let Some(b) = &r.price_book
            {
                price_book(b);
            }
        }
        5 => {
            if let Some(r) = decode::<pb::GetPriceBookRequest>(body) {
                tenant("tenant", &r.tenant);
            }
        }
        6 => {
            if let Some(r) = decode::<pb::SetPlanRequest>(body)
                && let Some(p) = &r.plan
            {
                tenant("plan.tenant", &p.tenant);
            }
        }
        7 => {
            if let Some(r) = decode::<pb::GetPlanRequest>(body) {
                tenant("tenant", &r.tenant);
            }
        }
        8 => {
            if let Some(r) = decode::<pb::SetQuotaRequest>(body)
                && let Some(q) = &r.rule
            {
                limit(&q.limit);
            }
        }
        9 => {
            if let Some(r) = decode::<pb::DeleteQuotaRequest>(body) {
                tenant("tenant", &r.tenant);
            }
        }
        10 => {
            if let Some(r) = decode::<pb::GetPolicyRequest>(body) {
                tenant("tenant", &r.tenant);
            }
        }
        11 => {
            if let Some(r) = decode::<pb::SetTierFloorRequest>(body) {
                tenant("tenant", &r.tenant);
                if let Some(f) = &r.floor {
                    let _ = convert::tier(f.tier);
                }
            }
        }
        12 => {
            if let Some(r) = decode::<pb::SetAlertRuleRequest>(body)
                && let Some(a) = &r.rule
            {
                tenant("rule.tenant", &a.tenant);
            }
        }
        13 => {
            if let Some(r) = decode::<pb::ListAlertRulesRequest>(body) {
                tenant("tenant", &r.tenant);
            }
        }
        14 => {
            if let Some(r) = decode::<pb::DeleteAlertRuleRequest>(body) {
                tenant("tenant", &r.tenant);
            }
        }
        15 => {
            if let Some(r) = decode::<pb::GetBalanceRequest>(body) {
                tenant("tenant", &r.tenant);
            }
        }
        16 => {
            if let Some(r) = decode::<pb::GetStatementRequest>(body) {
                tenant("tenant", &r.tenant);
            }
        }
        17 => {
            if let Some(r) = decode::<pb::ExportAuditRequest>(body) {
                tenant("tenant", &r.tenant);
            }
        }
        _ => {
            if let Some(r) = decode::<pb::VerifyAuditRequest>(body) {
                tenant("tenant", &r.tenant);
            }
        }
    }
});

//! The store test suite, generic over [`Store`]: every store implementation runs these
//! same cases through the [`Ledger`]. A store's test file provides an [`Opener`] factory
//! and expands [`store_suite!`]:
//!
//! ```ignore
//! mod store_suite;
//! async fn fresh() -> store_suite::Opener { /* a new empty database */ }
//! store_suite::store_suite!(fresh);
//! ```
//!
//! An [`Opener`] opens a new handle to ONE database each time it is called (a new
//! process, or a second authority replica); each case asks for a fresh database.
#![allow(dead_code)]

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use tollgate_core::{Credits, Initiator, Plan, Tier};
use tollgate_ledger::{
    AlertCondition, AlertRule, AuditSigner, BatchKey, DeductionOrder, Funding, GrantId, GrantKind,
    GrantSpec, HoldRequest, HoldStatus, Ledger, LedgerError, ManualClock, Store, TenantConfig,
    TenantId, UsageBatch, UsageRecord,
};

/// Opens a new handle to the suite case's database.
pub type Opener =
    Arc<dyn Fn() -> Pin<Box<dyn Future<Output = Arc<dyn Store>> + Send>> + Send + Sync>;

/// 2026-01-15 00:00:00 UTC.
pub const T0: u64 = 1_768_435_200;

pub fn c(n: u64) -> Credits {
    Credits::from_credits(n).unwrap()
}

pub fn tenant(s: &str) -> TenantId {
    TenantId::new(s).unwrap()
}

pub struct H {
    pub open: Opener,
    pub clock: ManualClock,
    pub ledger: Ledger,
}

pub fn signer() -> AuditSigner {
    AuditSigner::from_seed(&[3u8; 32])
}

impl H {
    pub async fn new(open: Opener) -> H {
        let clock = ManualClock::new(T0);
        let ledger = Ledger::new(open().await, Arc::new(clock.clone()), signer());
        H {
            open,
            clock,
            ledger,
        }
    }

    /// A second ledger (another process or replica) on the same database and clock.
    pub async fn replica(&self) -> Ledger {
        Ledger::new((self.open)().await, Arc::new(self.clock.clone()), signer())
    }

    pub async fn tenant_with(&self, name: &str, credits: u64) -> TenantId {
        let t = tenant(name);
        self.ledger
            .create_tenant(&t, TenantConfig::default())
            .await
            .unwrap();
        if credits > 0 {
            self.ledger
                .grant(&t, GrantSpec::new(GrantKind::Purchased, c(credits)))
                .await
                .unwrap();
        }
        t
    }
}

pub fn rec(t: &TenantId, agent: &str, amount: Credits) -> UsageRecord {
    UsageRecord {
        tenant: t.clone(),
        agent: agent.into(),
        model: "m".into(),
        feature: "f".into(),
        tier: Tier::Interactive,
        initiator: Initiator::Human,
        input_tokens: 10,
        output_tokens: 20,
        outcomes: 0,
        price_book_version: 0,
        client_amount: amount,
        at: T0,
        calls: 1,
        agent_instance: "".into(),
        task: "".into(),
        work_units: 0,
        pre_rated: false,
        aggregate: false,
    }
}

pub fn batch(sidecar: &str, seq: u64, records: Vec<UsageRecord>) -> UsageBatch {
    UsageBatch {
        key: BatchKey {
            sidecar_id: sidecar.into(),
            seq,
        },
        records,
        digest: Some("ab".repeat(32)),
        signature: None,
    }
}

fn hold_req(owner: &str, amount: Credits, ttl: u64) -> HoldRequest {
    HoldRequest {
        owner: owner.into(),
        amount,
        min_amount: amount,
        ttl_secs: ttl,
    }
}

// ----- cases -----

pub async fn migrations_are_idempotent_and_state_survives_reopen(open: Opener) {
    let h = H::new(open).await;
    let t = h.tenant_with("acme", 50).await;
    h.ledger
        .post_batch(&batch("sc", 1, vec![rec(&t, "a", c(5))]))
        .await
        .unwrap();
    let before = h.ledger.balance(&t).await.unwrap();
    // A restarted authority opens the same database (migrations run again: no-op).
    let again = h.replica().await;
    let after = again.balance(&t).await.unwrap();
    assert_eq!(before.consumed, after.consumed);
    assert_eq!(before.available, after.available);
    assert_eq!(after.consumed, c(5));
    assert!(again.verify_audit(None).await.unwrap().is_ok());
}

pub async fn duplicate_batch_is_posted_once(open: Opener) {
    let h = H::new(open).await;
    let t = h.tenant_with("acme", 100).await;
    let b = batch("sc-1", 7, vec![rec(&t, "a", c(3)), rec(&t, "b", c(4))]);
    let first = h.ledger.post_batch(&b).await.unwrap();
    assert!(!first.duplicate);
    assert_eq!(first.tenants[0].from_grants, c(7));
    // Re-sent (lost acknowledgement), to the same process.
    let second = h.ledger.post_batch(&b).await.unwrap();
    assert!(second.duplicate);
    assert_eq!(
        second.tenants, first.tenants,
        "same outcome as the first time"
    );
    // Re-sent after a restart, to another process on the same database.
    let other = h.replica().await;
    assert!(other.post_batch(&b).await.unwrap().duplicate);
    // Twice in one group commit, plus a new one.
    let b2 = batch("sc-1", 8, vec![rec(&t, "a", c(1))]);
    let outs = h
        .ledger
        .post_batches(&[b2.clone(), b.clone(), b2.clone()])
        .await
        .unwrap();
    assert!(!outs[0].duplicate);
    assert!(outs[1].duplicate);
    assert!(outs[2].duplicate);
    assert_eq!(outs[2].tenants, outs[0].tenants);
    // Same sequence number from another sidecar is another batch.
    let b3 = batch("sc-2", 7, vec![rec(&t, "a", c(2))]);
    assert!(!h.ledger.post_batch(&b3).await.unwrap().duplicate);
    let bal = h.ledger.balance(&t).await.unwrap();
    assert_eq!(bal.consumed, c(10), "7 + 1 + 2, each batch once");
    assert!(h.ledger.batch(&b.key).await.unwrap().is_some());
}

/// A key re-sent with another digest is another batch reusing the key: refused with
/// `BatchConflict` (stored or within one group commit), never answered as a duplicate,
/// and nothing of it is posted.
pub async fn a_batch_key_resent_with_other_content_is_a_conflict(open: Opener) {
    let h = H::new(open).await;
    let t = h.tenant_with("acme", 100).await;
    let b = batch("sc-1", 1, vec![rec(&t, "a", c(3))]);
    h.ledger.post_batch(&b).await.unwrap();
    let mut forged = batch("sc-1", 1, vec![rec(&t, "a", c(40))]);
    forged.digest = Some("cd".repeat(32));
    let e = h.ledger.post_batch(&forged).await.unwrap_err();
    assert!(
        matches!(e, LedgerError::BatchConflict { .. }),
        "stored key, other content: {e:?}"
    );
    let other = h.replica().await;
    assert!(matches!(
        other.post_batch(&forged).await,
        Err(LedgerError::BatchConflict { .. })
    ));
    let mut b2 = batch("sc-1", 2, vec![rec(&t, "a", c(1))]);
    b2.digest = Some("ef".repeat(32));
    let mut b2_other = b2.clone();
    b2_other.digest = Some("01".repeat(32));
    assert!(matches!(
        h.ledger.post_batches(&[b2.clone(), b2_other]).await,
        Err(LedgerError::BatchConflict { .. })
    ));
    assert!(
        h.ledger.post_batch(&b).await.unwrap().duplicate,
        "identical: duplicate"
    );
    let bal = h.ledger.balance(&t).await.unwrap();
    assert_eq!(bal.consumed, c(3), "only the first batch is posted");
}

/// Batch-key retention: keys older than the retention are pruned at the sweep, and a
/// pruned key re-sent is still a duplicate (through its sidecar's watermark), on this
/// instance and on another one; newer keys and other sidecars are untouched.
pub async fn pruned_batch_keys_stay_duplicates(open: Opener) {
    let h = H::new(open).await;
    let t = h.tenant_with("acme", 100).await;
    let ledger = Ledger::new((h.open)().await, Arc::new(h.clock.clone()), signer())
        .with_batch_retention(3600);
    let old: Vec<UsageBatch> = (1..=3)
        .map(|seq| batch("sc-1", seq, vec![rec(&t, "a", c(1))]))
        .collect();
    for b in &old {
        assert!(!ledger.post_batch(b).await.unwrap().duplicate);
    }
    h.clock.advance(3000);
    let recent = batch("sc-1", 4, vec![rec(&t, "a", c(1))]);
    assert!(!ledger.post_batch(&recent).await.unwrap().duplicate);
    h.clock.advance(700); // the first three are now past the hour; seq 4 is not
    let report = ledger.sweep(100).await.unwrap();
    assert_eq!(report.batches_pruned, 3);
    assert_eq!(ledger.sweep(100).await.unwrap().batches_pruned, 0);
    // A pruned key: a duplicate with its figures gone, never posted again.
    for l in [&ledger, &h.replica().await] {
        let again = l.post_batch(&old[1]).await.unwrap();
        assert!(again.duplicate, "{again:?}");
        assert!(again.tenants.is_empty());
        assert!(l.batch(&old[0].key).await.unwrap().unwrap().duplicate);
    }
    // The key kept, and the next new one, behave as before.
    assert!(ledger.post_batch(&recent).await.unwrap().duplicate);
    let next = batch("sc-1", 5, vec![rec(&t, "a", c(1))]);
    assert!(!ledger.post_batch(&next).await.unwrap().duplicate);
    // Another sidecar's low sequence numbers are its own.
    let other = batch("sc-2", 1, vec![rec(&t, "b", c(2))]);
    assert!(!ledger.post_batch(&other).await.unwrap().duplicate);
    assert!(
        ledger
            .batch(&batch("sc-1", 6, Vec::new()).key)
            .await
            .unwrap()
            .is_none()
    );
    let bal = ledger.balance(&t).await.unwrap();
    assert_eq!(
        bal.consumed,
        c(7),
        "five sc-1 batches of 1 and one sc-2 batch of 2, once each"
    );
    assert!(ledger.verify_audit(None).await.unwrap().is_ok());
}

pub async fn concurrent_replicas_post_a_batch_once(open: Opener) {
    let h = H::new(open).await;
    let t = h.tenant_with("acme", 1000).await;
    let a = Arc::new(h.replica().await);
    let b = Arc::new(h.replica().await);
    let mut tasks = Vec::new();
    for i in 0..20u64 {
        let l = if i % 2 == 0 { a.clone() } else { b.clone() };
        let bt = batch("sc", i / 2, vec![rec(&t, "x", c(1))]);
        tasks.push(tokio::spawn(async move { l.post_batch(&bt).await }));
    }
    let mut fresh = 0;
    for task in tasks {
        if !task.await.unwrap().unwrap().duplicate {
            fresh += 1;
        }
    }
    assert_eq!(fresh, 10, "10 distinct keys, each posted once");
    assert_eq!(h.ledger.balance(&t).await.unwrap().consumed, c(10));
}

pub async fn concurrent_holds_never_overdraw(open: Opener) {
    let h = H::new(open).await;
    let t = h.tenant_with("acme", 10).await;
    let a = Arc::new(h.replica().await);
    let b = Arc::new(h.replica().await);
    let mut tasks = Vec::new();
    for i in 0..16 {
        let l = if i % 2 == 0 { a.clone() } else { b.clone() };
        let t = t.clone();
        tasks.push(tokio::spawn(async move {
            l.hold(&t, hold_req(&format!("sc-{i}"), c(1), 60)).await
        }));
    }
    let mut ok = 0;
    for task in tasks {
        match task.await.unwrap() {
            Ok(_) => ok += 1,
            Err(LedgerError::InsufficientFunds { .. }) => {}
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(ok, 10, "exactly the 10 credits were held");
    let bal = h.ledger.balance(&t).await.unwrap();
    assert_eq!(bal.held, c(10));
    assert_eq!(bal.available, Credits::ZERO);
    assert!(h.ledger.verify_audit(None).await.unwrap().is_ok());
}

pub async fn holds_post_void_and_expire(open: Opener) {
    let h = H::new(open).await;
    let t = h.tenant_with("acme", 100).await;
    let h1 = h.ledger.hold(&t, hold_req("sc", c(20), 60)).await.unwrap();
    let h2 = h.ledger.hold(&t, hold_req("sc", c(30), 600)).await.unwrap();
    let h3 = h.ledger.hold(&t, hold_req("sc", c(10), 30)).await.unwrap();
    // Post 15 of h1; the other 5 go back.
    let p = h.ledger.post_hold(&t, h1.id, c(15)).await.unwrap();
    assert_eq!(p.status, HoldStatus::Posted);
    assert_eq!(p.drawn, c(15));
    assert_eq!(p.released, c(5));
    // Holds are never edited after they end.
    let err = h.ledger.void_hold(&t, h1.id).await.unwrap_err();
    assert!(matches!(err, LedgerError::HoldClosed { .. }), "{err}");
    let err = h.ledger.post_hold(&t, h2.id, c(31)).await.unwrap_err();
    assert!(matches!(err, LedgerError::InvalidInput(_)), "{err}");
    // h3 times out; the sweep releases it.
    h.clock.advance(31);
    let r = h.ledger.sweep(10).await.unwrap();
    assert_eq!(r.holds_expired, 1);
    let all = h.ledger.holds(&t, true).await.unwrap();
    let s3 = all.iter().find(|x| x.id == h3.id).unwrap();
    assert_eq!(s3.status, HoldStatus::Expired);
    assert_eq!(s3.released, c(10));
    let v = h.ledger.void_hold(&t, h2.id).await.unwrap();
    assert_eq!(v.status, HoldStatus::Voided);
    let bal = h.ledger.balance(&t).await.unwrap();
    assert_eq!(bal.consumed, c(15));
    assert_eq!(bal.held, Credits::ZERO);
    assert_eq!(bal.available, c(85));
    assert!(h.ledger.holds(&t, false).await.unwrap().is_empty());
}

/// A hold whose timeout passed but that no sweep has expired yet: `void_hold` fails
/// (the timeout ended it first) and leaves the store as it was; `settle_hold` commits the
/// expiry and returns what the store now holds. The authority's lease settlement counts
/// `released` from that (a read after a failed `void_hold` once counted 0 here).
pub async fn settle_hold_reports_an_expiry_no_sweep_has_committed(open: Opener) {
    let h = H::new(open).await;
    let t = h.tenant_with("acme", 100).await;
    let hold = h.ledger.hold(&t, hold_req("sc", c(40), 30)).await.unwrap();
    h.ledger
        .post_batch(&batch("sc", 1, vec![rec(&t, "a", c(5))]))
        .await
        .unwrap();
    h.clock.advance(31);
    let err = h.ledger.void_hold(&t, hold.id).await.unwrap_err();
    assert!(matches!(err, LedgerError::HoldClosed { .. }), "{err}");
    let stored = h.ledger.holds(&t, false).await.unwrap();
    assert_eq!(stored.len(), 1, "void_hold's failed tx committed nothing");
    let settled = h.ledger.settle_hold(&t, hold.id).await.unwrap();
    assert_eq!(settled.status, HoldStatus::Expired);
    assert_eq!(settled.released, c(40).checked_sub(settled.drawn).unwrap());
    assert!(!settled.drawn.is_zero(), "the batch drew from the hold");
    let all = h.ledger.holds(&t, true).await.unwrap();
    assert_eq!(all.len(), 1);
    assert_eq!(all[0].status, HoldStatus::Expired);
    assert_eq!(all[0].released, settled.released);
    // Settling again returns the same final state and moves nothing.
    let before = h.ledger.balance(&t).await.unwrap();
    let again = h.ledger.settle_hold(&t, hold.id).await.unwrap();
    assert_eq!(again.released, settled.released);
    assert_eq!(h.ledger.balance(&t).await.unwrap(), before);
    assert!(h.ledger.verify_audit(None).await.unwrap().is_ok());
}

/// A lease returned in part hands that much of its hold back at once; the hold stays
/// open with the rest, usage draws only what is left, and the end releases the remainder.
pub async fn a_hold_reduced_hands_credits_back_and_stays_open(open: Opener) {
    let h = H::new(open).await;
    let t = h.tenant_with("acme", 100).await;
    let hold = h.ledger.hold(&t, hold_req("sc", c(30), 600)).await.unwrap();
    let r = h.ledger.reduce_hold(&t, hold.id, c(10)).await.unwrap();
    assert_eq!(
        (r.status, r.released, r.remaining()),
        (HoldStatus::Open, c(10), c(20))
    );
    let bal = h.ledger.balance(&t).await.unwrap();
    assert_eq!((bal.available, bal.held), (c(80), c(20)));
    let err = h.ledger.reduce_hold(&t, hold.id, c(21)).await.unwrap_err();
    assert!(matches!(err, LedgerError::InvalidInput(_)), "{err}");
    // Usage of 25 by the owner: 20 from the hold, 5 from the grant.
    let out = h
        .ledger
        .post_batch(&batch("sc", 1, vec![rec(&t, "a", c(25))]))
        .await
        .unwrap();
    assert_eq!(out.tenants[0].from_holds, c(20));
    assert_eq!(out.tenants[0].from_grants, c(5));
    let ended = h.ledger.void_hold(&t, hold.id).await.unwrap();
    assert_eq!(ended.status, HoldStatus::Posted);
    assert_eq!(
        ended.drawn.checked_add(ended.released).unwrap(),
        ended.amount
    );
    let err = h.ledger.reduce_hold(&t, hold.id, c(1)).await.unwrap_err();
    assert!(matches!(err, LedgerError::HoldClosed { .. }), "{err}");
    let bal = h.ledger.balance(&t).await.unwrap();
    assert_eq!(
        (bal.available, bal.held, bal.consumed),
        (c(75), c(0), c(25))
    );
    assert!(h.ledger.verify_audit(None).await.unwrap().is_ok());
}

pub async fn usage_draws_from_the_senders_holds_first(open: Opener) {
    let h = H::new(open).await;
    let t = h.tenant_with("acme", 100).await;
    let mine = h
        .ledger
        .hold(&t, hold_req("sc-1", c(10), 600))
        .await
        .unwrap();
    let theirs = h
        .ledger
        .hold(&t, hold_req("sc-2", c(10), 600))
        .await
        .unwrap();
    let out = h
        .ledger
        .post_batch(&batch("sc-1", 1, vec![rec(&t, "a", c(12))]))
        .await
        .unwrap();
    let tp = &out.tenants[0];
    assert_eq!(tp.from_holds, c(10), "the sender's lease pays first");
    assert_eq!(
        tp.from_grants,
        c(2),
        "the overrun past it comes from the grant"
    );
    let holds = h.ledger.holds(&t, false).await.unwrap();
    assert_eq!(holds.iter().find(|x| x.id == mine.id).unwrap().drawn, c(10));
    assert_eq!(
        holds.iter().find(|x| x.id == theirs.id).unwrap().drawn,
        Credits::ZERO
    );
    // The statement names the grant and the hold's draws.
    let posts = h
        .ledger
        .store()
        .postings(&t, 0, u64::MAX / 2, 100)
        .await
        .unwrap();
    assert!(
        posts
            .iter()
            .any(|p| p.hold == Some(mine.id) && p.amount == c(10))
    );
    assert!(
        posts
            .iter()
            .any(|p| p.hold.is_none() && p.funding == Funding::Grant(GrantId(1)))
    );
}

pub async fn deduction_order_default_and_configured(open: Opener) {
    let h = H::new(open).await;
    let t = h.tenant_with("acme", 0).await;
    let g = |kind, amount, prio, exp: Option<u64>| {
        let mut s = GrantSpec::new(kind, c(amount)).priority(prio);
        if let Some(e) = exp {
            s = s.expires_at(T0 + e);
        }
        s
    };
    // id 1: priority 2, no expiry; id 2: priority 1, expires in 30 d;
    // id 3: priority 1, expires in 10 d; id 4: priority 1, expires in 10 d (newer).
    for s in [
        g(GrantKind::Purchased, 10, 2, None),
        g(GrantKind::Promotional, 10, 1, Some(30 * 86_400)),
        g(GrantKind::Trial, 10, 1, Some(10 * 86_400)),
        g(GrantKind::Trial, 10, 1, Some(10 * 86_400)),
    ] {
        h.ledger.grant(&t, s).await.unwrap();
    }
    // Default: priority, earliest expiry, oldest: 3, 4, 2, 1.
    let out = h
        .ledger
        .post_batch(&batch("sc", 1, vec![rec(&t, "a", c(25))]))
        .await
        .unwrap();
    assert_eq!(out.tenants[0].from_grants, c(25));
    let gs = h.ledger.grants(&t, true).await.unwrap();
    let avail: Vec<Credits> = gs.iter().map(|g| g.available).collect();
    assert_eq!(avail, vec![c(10), c(5), Credits::ZERO, Credits::ZERO]);
    // Postings record balance before and after of the paying grant.
    let posts = h
        .ledger
        .store()
        .postings(&t, 0, u64::MAX / 2, 100)
        .await
        .unwrap();
    let p2 = posts
        .iter()
        .find(|p| p.funding == Funding::Grant(GrantId(2)))
        .unwrap();
    assert_eq!((p2.balance_before, p2.balance_after), (c(10), c(5)));
    // Configured: expiry first puts the never-expiring grant 1 last, still.
    h.ledger
        .set_deduction_order(&t, DeductionOrder::expiry_first())
        .await
        .unwrap();
    h.ledger
        .post_batch(&batch("sc", 2, vec![rec(&t, "a", c(7))]))
        .await
        .unwrap();
    let gs = h.ledger.grants(&t, true).await.unwrap();
    assert_eq!(gs[1].available, Credits::ZERO);
    assert_eq!(gs[0].available, c(8));
}

/// A reference reused with another amount (or kind, priority, start, expiry, reset) is
/// not a retry: refused, naming the reference, and nothing is granted.
pub async fn a_grant_reference_reused_with_other_terms_is_refused(open: Opener) {
    let h = H::new(open).await;
    let t = h.tenant_with("acme", 0).await;
    let spec = GrantSpec::new(GrantKind::Purchased, c(40))
        .reference("invoice-7")
        .expires_at(T0 + 100);
    let first = h.ledger.grant(&t, spec.clone()).await.unwrap();
    let mut cases: Vec<(GrantSpec, &str)> = Vec::new();
    let mut s = spec.clone();
    s.amount = c(41);
    cases.push((s, "amount"));
    let mut s = spec.clone();
    s.kind = GrantKind::Promotional;
    cases.push((s, "kind"));
    cases.push((spec.clone().priority(5), "priority"));
    cases.push((spec.clone().starts_at(T0 + 10), "starts_at"));
    cases.push((spec.clone().expires_at(T0 + 200), "expires_at"));
    for (other, field) in cases {
        let err = h.ledger.grant(&t, other).await.unwrap_err();
        match &err {
            LedgerError::GrantReferenceConflict {
                reference,
                grant,
                differing,
                ..
            } => {
                assert_eq!(reference, "invoice-7");
                assert_eq!(*grant, first.id);
                assert_eq!(differing, &vec![field], "{err}");
            }
            other => panic!("{field}: not a reference conflict: {other}"),
        }
        assert!(err.to_string().contains("invoice-7"), "{err}");
    }
    // The same terms again (start left to "now", a second later): the first grant.
    h.clock.advance(1);
    let again = h.ledger.grant(&t, spec).await.unwrap();
    assert_eq!(again.id, first.id);
    let bal = h.ledger.balance(&t).await.unwrap();
    assert_eq!(bal.granted, c(40), "only the first grant granted");
    assert_eq!(bal.grants.len(), 1);
}

pub async fn grants_by_reference_are_idempotent_and_expire(open: Opener) {
    let h = H::new(open).await;
    let t = h.tenant_with("acme", 0).await;
    let spec = GrantSpec::new(GrantKind::Purchased, c(40))
        .reference("invoice-1")
        .expires_at(T0 + 100);
    let a = h.ledger.grant(&t, spec.clone()).await.unwrap();
    let b = h.ledger.grant(&t, spec).await.unwrap();
    assert_eq!(a.id, b.id);
    assert_eq!(h.ledger.balance(&t).await.unwrap().granted, c(40));
    let future = h
        .ledger
        .grant(
            &t,
            GrantSpec::new(GrantKind::Promotional, c(5)).starts_at(T0 + 1000),
        )
        .await
        .unwrap();
    let bal = h.ledger.balance(&t).await.unwrap();
    assert_eq!(bal.upcoming, c(5));
    assert_eq!(bal.available, c(40));
    h.clock.advance(100);
    assert_eq!(h.ledger.sweep(10).await.unwrap().tenants_caught_up, 1);
    let bal = h.ledger.balance(&t).await.unwrap();
    assert_eq!(bal.expired, c(40));
    assert_eq!(bal.available, Credits::ZERO);
    h.clock.advance(900);
    let bal = h.ledger.balance(&t).await.unwrap();
    assert_eq!(bal.available, c(5));
    assert_eq!(
        bal.grants
            .iter()
            .find(|g| g.id == future.id)
            .unwrap()
            .available,
        c(5)
    );
    // Adjustments.
    h.ledger
        .adjust(&t, future.id, c(3), c(1), "goodwill")
        .await
        .unwrap();
    let bal = h.ledger.balance(&t).await.unwrap();
    assert_eq!(bal.available, c(7));
    assert_eq!(bal.granted, c(48));
    let err = h
        .ledger
        .adjust(&t, future.id, Credits::ZERO, c(100), "too much")
        .await
        .unwrap_err();
    assert!(matches!(err, LedgerError::InvalidInput(_)), "{err}");
}

pub async fn statement_burn_rate_and_depletion(open: Opener) {
    let h = H::new(open).await;
    let t = h.tenant_with("acme", 100).await;
    // 6 credits per 10 minutes for an hour: 36 credits/hour.
    for i in 0..6u64 {
        let recs = vec![rec(&t, "a", c(4)), rec(&t, "b", c(2))];
        h.ledger.post_batch(&batch("sc", i, recs)).await.unwrap();
        h.clock.advance(600);
    }
    let bal = h.ledger.balance(&t).await.unwrap();
    assert_eq!(bal.consumed, c(36));
    assert_eq!(bal.burn_rate_1h, c(36));
    assert_eq!(bal.burn_rate_24h, Credits::from_micros(c(36).micros() / 24));
    // 64 credits left at 36/hour: 64/36 h = 6400 s.
    assert_eq!(bal.projected_depletion_at, Some(bal.at + 6400));
    let st = h.ledger.statement(&t, T0, T0 + 3600).await.unwrap();
    assert_eq!(st.rows.len(), 2);
    let a = st.rows.iter().find(|r| r.agent == "a").unwrap();
    assert_eq!((a.amount, a.records), (c(24), 6));
    assert_eq!(a.input_tokens, 60);
    let st = h.ledger.statement(&t, T0, T0 + 1).await.unwrap();
    assert_eq!(st.rows.iter().map(|r| r.records).sum::<u64>(), 2);
    // Three days later nothing is burning (a store may prune the old buckets).
    h.clock.advance(3 * 86_400);
    assert!(h.ledger.sweep(10).await.unwrap().buckets_pruned <= 6);
    let bal = h.ledger.balance(&t).await.unwrap();
    assert_eq!(bal.burn_rate_24h, Credits::ZERO);
    assert_eq!(bal.projected_depletion_at, None);
    // Statements come from postings, which are kept.
    let st = h.ledger.statement(&t, T0, T0 + 3600).await.unwrap();
    assert_eq!(st.rows.len(), 2);
    // An aggregate record (a sidecar's full ring lost per-call detail) counts its calls.
    let mut agg = rec(&t, "a", c(3));
    agg.calls = 5;
    h.ledger
        .post_batch(&batch("sc", 100, vec![agg, rec(&t, "a", c(1))]))
        .await
        .unwrap();
    let now = tollgate_ledger::Clock::now(&h.clock);
    let st = h.ledger.statement(&t, now, now + 1).await.unwrap();
    assert_eq!(st.rows.iter().map(|r| r.records).sum::<u64>(), 6);
    let total = st.rows.iter().map(|r| r.amount.micros()).sum::<u64>();
    assert_eq!(total, c(4).micros());
}

pub async fn alerts_fire_once_and_are_audited(open: Opener) {
    let h = H::new(open).await;
    let t = h.tenant_with("acme", 100).await;
    h.ledger
        .set_alert_rules(
            &t,
            vec![
                AlertRule {
                    id: "half".into(),
                    condition: AlertCondition::BudgetUsedPercent { percent: 50 },
                },
                AlertRule {
                    id: "soon".into(),
                    condition: AlertCondition::DepletionWithin { hours: 2 },
                },
            ],
        )
        .await
        .unwrap();
    assert!(h.ledger.evaluate_alerts(&t).await.unwrap().is_empty());
    h.ledger
        .post_batch(&batch("sc", 1, vec![rec(&t, "a", c(60))]))
        .await
        .unwrap();
    let fired = h.ledger.evaluate_alerts(&t).await.unwrap();
    let ids: Vec<&str> = fired.iter().map(|a| a.rule_id.as_str()).collect();
    // 60 of 100 used; 40 left at 60/hour: depletion in 40 minutes.
    assert_eq!(ids, vec!["half", "soon"]);
    assert!(
        h.ledger.evaluate_alerts(&t).await.unwrap().is_empty(),
        "fires once"
    );
    let recs = h.ledger.audit_records(&t, 1, 1000).await.unwrap();
    let alerts = recs
        .iter()
        .filter(|r| r.event().unwrap().kind() == "alert")
        .count();
    assert_eq!(alerts, 2);
    assert_eq!(fired[0].audit_seq, recs[recs.len() - 2].seq);
    // Pages past any sequence a store can hold are empty, not an overflow.
    for from in [i64::MAX as u64, i64::MAX as u64 + 1, u64::MAX] {
        assert_eq!(h.ledger.audit_records(&t, from, 10).await.unwrap(), vec![]);
    }
    // Invalid rules are refused with a message.
    let err = h
        .ledger
        .set_alert_rules(
            &t,
            vec![AlertRule {
                id: "x".into(),
                condition: AlertCondition::BudgetUsedPercent { percent: 0 },
            }],
        )
        .await
        .unwrap_err();
    assert!(err.to_string().contains("percent"), "{err}");
}

pub async fn plan_funds_usage_past_grants_up_to_the_cap(open: Opener) {
    let h = H::new(open).await;
    let t = h.tenant_with("acme", 5).await;
    h.ledger
        .set_plan(
            &t,
            Some(Plan {
                included_credits: c(3),
                hard_cap: Some(c(4)),
                ..Plan::default()
            }),
        )
        .await
        .unwrap();
    // Spendable: 5 in grants + 3 included + 4 under the cap.
    assert_eq!(h.ledger.balance(&t).await.unwrap().spendable, c(12));
    let (s, limit) = h.ledger.spendable(&t).await.unwrap();
    assert_eq!(s, c(12));
    assert_eq!(limit, tollgate_core::LimitKind::HardCap);
    let hold = h.ledger.hold(&t, hold_req("sc", c(12), 600)).await.unwrap();
    assert_eq!(hold.parts.len(), 2);
    assert_eq!(hold.parts[1].funding, Funding::Plan);
    let out = h
        .ledger
        .post_batch(&batch("sc", 1, vec![rec(&t, "a", c(15))]))
        .await
        .unwrap();
    let tp = &out.tenants[0];
    assert_eq!(tp.from_holds, c(12));
    assert_eq!(tp.overrun, c(3));
    let bal = h.ledger.balance(&t).await.unwrap();
    let bill = bal.period_bill.unwrap();
    assert_eq!(bill.usage_charge, c(4), "charge stops at the cap");
    assert_eq!(bal.overrun, c(3));
    // Next month the plan's room is back.
    h.clock.set(1_769_904_000); // 2026-02-01
    assert_eq!(h.ledger.balance(&t).await.unwrap().spendable, c(7));
}

/// Usage past a sender's holds is funded from the plan only within the room no other
/// hold has reserved: a hold's plan part stays drawable in full, so the usage it backs
/// is billed, not turned into overrun by someone else's usage.
pub async fn plan_room_reserved_by_a_hold_is_not_taken_by_other_usage(open: Opener) {
    let h = H::new(open).await;
    let t = h.tenant_with("acme", 0).await;
    h.ledger
        .set_plan(
            &t,
            Some(Plan {
                hard_cap: Some(c(10)),
                ..Plan::default()
            }),
        )
        .await
        .unwrap();
    let held = h
        .ledger
        .hold(&t, hold_req("sc-a", c(6), 600))
        .await
        .unwrap();
    assert_eq!(held.parts[0].funding, Funding::Plan);
    // sc-b has no hold and spends 7: only 4 of the cap's room is not reserved.
    let out = h
        .ledger
        .post_batch(&batch("sc-b", 1, vec![rec(&t, "b", c(7))]))
        .await
        .unwrap();
    assert_eq!(out.tenants[0].from_plan, c(4));
    assert_eq!(out.tenants[0].overrun, c(3));
    // sc-a spends its whole hold: all of it is funded and billed.
    let out = h
        .ledger
        .post_batch(&batch("sc-a", 1, vec![rec(&t, "a", c(6))]))
        .await
        .unwrap();
    assert_eq!(out.tenants[0].from_holds, c(6));
    assert_eq!(out.tenants[0].overrun, Credits::ZERO);
    let bal = h.ledger.balance(&t).await.unwrap();
    assert_eq!(
        bal.period_bill.unwrap().usage_charge,
        c(10),
        "the cap, not past it"
    );
    assert_eq!(bal.overrun, c(3));
    assert!(h.ledger.verify_audit(None).await.unwrap().is_ok());
}

/// A hold posted by amount after its plan part was cut by a lowered cap: the part the
/// cap refuses is recorded as overrun (never billed), not silently dropped.
pub async fn a_post_cut_by_a_lowered_cap_records_the_rest_as_overrun(open: Opener) {
    let h = H::new(open).await;
    let t = h.tenant_with("acme", 0).await;
    let plan = |cap| Plan {
        hard_cap: Some(c(cap)),
        ..Plan::default()
    };
    h.ledger.set_plan(&t, Some(plan(10))).await.unwrap();
    let hold = h.ledger.hold(&t, hold_req("sc", c(6), 600)).await.unwrap();
    h.ledger.set_plan(&t, Some(plan(2))).await.unwrap();
    let posted = h.ledger.post_hold(&t, hold.id, c(6)).await.unwrap();
    assert_eq!(posted.drawn, c(2), "the cap lets 2 through");
    let bal = h.ledger.balance(&t).await.unwrap();
    assert_eq!(bal.overrun, c(4), "the other 4 are recorded as overrun");
    assert_eq!(
        bal.period_bill.unwrap().usage_charge,
        c(2),
        "billed up to the cap"
    );
    assert_eq!(bal.plan_held, Credits::ZERO);
    assert!(h.ledger.verify_audit(None).await.unwrap().is_ok());
}

pub async fn multi_tenant_batches_stay_apart(open: Opener) {
    let h = H::new(open).await;
    let a = h.tenant_with("a", 10).await;
    let b = h.tenant_with("b", 10).await;
    let out = h
        .ledger
        .post_batch(&batch(
            "sc",
            1,
            vec![rec(&a, "x", c(15)), rec(&b, "y", c(1))],
        ))
        .await
        .unwrap();
    assert_eq!(out.tenants.len(), 2);
    assert_eq!(out.tenants[0].overrun, c(5), "a's runaway agent");
    assert_eq!(out.tenants[1].from_grants, c(1), "b is not touched by a");
    assert_eq!(h.ledger.balance(&b).await.unwrap().available, c(9));
    // Unknown tenant: the whole batch is refused and nothing is posted.
    let ghost = tenant("ghost");
    let err = h
        .ledger
        .post_batch(&batch(
            "sc",
            2,
            vec![rec(&a, "x", c(1)), rec(&ghost, "y", c(1))],
        ))
        .await
        .unwrap_err();
    assert!(matches!(err, LedgerError::UnknownTenant(_)), "{err}");
    assert_eq!(h.ledger.balance(&a).await.unwrap().consumed, c(10));
    assert!(
        h.ledger
            .batch(&BatchKey {
                sidecar_id: "sc".into(),
                seq: 2
            })
            .await
            .unwrap()
            .is_none()
    );
    let rep = h.ledger.verify_audit(None).await.unwrap().unwrap();
    assert_eq!(rep.tenants.len(), 2);
}

pub async fn bad_input_is_refused_with_a_reason(open: Opener) {
    let h = H::new(open).await;
    let t = h.tenant_with("acme", 10).await;
    assert!(TenantId::new("bad tenant!").is_err());
    assert!(matches!(
        h.ledger.create_tenant(&t, TenantConfig::default()).await,
        Err(LedgerError::TenantExists(_))
    ));
    let e = h
        .ledger
        .grant(&t, GrantSpec::new(GrantKind::Trial, Credits::ZERO))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("amount"), "{e}");
    let e = h
        .ledger
        .grant(
            &t,
            GrantSpec::new(GrantKind::Trial, c(1))
                .starts_at(T0 + 10)
                .expires_at(T0 + 5),
        )
        .await
        .unwrap_err();
    assert!(e.to_string().contains("expires_at"), "{e}");
    let e = h
        .ledger
        .hold(&t, hold_req("sc", c(1), 0))
        .await
        .unwrap_err();
    assert!(matches!(e, LedgerError::InvalidInput(_)), "{e}");
    let e = h
        .ledger
        .hold(&t, hold_req("sc", c(11), 10))
        .await
        .unwrap_err();
    assert!(matches!(e, LedgerError::InsufficientFunds { .. }), "{e}");
    let mut r = rec(&t, "a", c(1));
    r.model = "x".repeat(1000).into();
    let e = h
        .ledger
        .post_batch(&batch("sc", 1, vec![r]))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("model"), "{e}");
    let e = h.ledger.balance(&tenant("nobody")).await.unwrap_err();
    assert!(matches!(e, LedgerError::UnknownTenant(_)), "{e}");
    // Nothing above changed the wallet.
    let bal = h.ledger.balance(&t).await.unwrap();
    assert_eq!(bal.available, c(10));
}

/// Attribution and tasks round-trip through the store: postings keep the agent's name,
/// its instance, the task, work units and request units; task rows keep their terms and
/// counters, also when a replica (another store handle) reads them; a month's plan usage
/// is summed from the plan-funded postings.
pub async fn attribution_and_tasks_are_stored(open: Opener) {
    use tollgate_ledger::{TaskOpened, TaskTerms};
    let h = H::new(open).await;
    let t = tenant("acme");
    h.ledger
        .create_tenant(
            &t,
            TenantConfig {
                plan: Some(Plan::default()),
                ..TenantConfig::default()
            },
        )
        .await
        .unwrap();
    let terms = TaskTerms {
        budget: c(5),
        max_calls: Some(10),
    };
    assert_eq!(
        h.ledger.open_task(&t, "ticket-1", terms).await.unwrap(),
        TaskOpened::Created
    );
    let mut r = rec(&t, "support-bot", c(2));
    r.agent_instance = "pod-1/7/lane0".into();
    r.task = "ticket-1".into();
    r.feature = "triage".into();
    let done = UsageRecord {
        work_units: 1,
        client_amount: Credits::ZERO,
        input_tokens: 0,
        output_tokens: 0,
        ..r.clone()
    };
    h.ledger
        .post_batch(&batch("pod-1", 1, vec![r.clone(), r, done]))
        .await
        .unwrap();
    let replica = h.replica().await;
    let row = replica.task(&t, "ticket-1").await.unwrap().unwrap();
    assert_eq!(row.terms, Some(terms));
    assert_eq!((row.spent, row.calls, row.work_units), (c(4), 2, 1));
    assert_eq!(row.completed_at, Some(T0));
    assert_eq!(replica.tasks(&t, 5).await.unwrap().len(), 1);
    // A conflicting registration through the replica is counted there.
    let other = TaskTerms {
        budget: c(6),
        max_calls: None,
    };
    assert_eq!(
        replica.open_task(&t, "ticket-1", other).await.unwrap(),
        TaskOpened::Conflict { kept: terms }
    );
    assert_eq!(
        h.ledger
            .task(&t, "ticket-1")
            .await
            .unwrap()
            .unwrap()
            .conflicts,
        1
    );
    let s = h.ledger.statement(&t, 0, T0 + 1).await.unwrap();
    let paid: Vec<_> = s.rows.iter().filter(|r| r.records > 0).collect();
    assert_eq!(paid.len(), 1);
    assert_eq!(paid[0].agent, "support-bot");
    assert_eq!(paid[0].agent_instance, "pod-1/7/lane0");
    assert_eq!(
        (paid[0].task.as_str(), paid[0].feature.as_str()),
        ("ticket-1", "triage")
    );
    assert_eq!(s.rows.iter().map(|r| r.work_units).sum::<u64>(), 1);
    // No grants: the plan funded it all; the month's usage sums from the postings.
    assert_eq!(s.plan_funded, c(4));
    assert_eq!(s.plan_bills.len(), 1);
    assert_eq!(s.plan_bills[0].usage.metered, c(4));
    let bal = h.ledger.balance(&t).await.unwrap();
    assert_eq!(bal.period_usage, s.plan_bills[0].usage);
}

/// Expand one `#[tokio::test]` per case for a store. `$fresh` is an async fn returning
/// an [`Opener`] for a new, empty database.
#[macro_export]
macro_rules! store_suite {
    ($fresh:path) => {
        $crate::store_suite!(@cases $fresh;
            migrations_are_idempotent_and_state_survives_reopen,
            duplicate_batch_is_posted_once,
            a_batch_key_resent_with_other_content_is_a_conflict,
            pruned_batch_keys_stay_duplicates,
            concurrent_replicas_post_a_batch_once,
            concurrent_holds_never_overdraw,
            holds_post_void_and_expire,
            a_hold_reduced_hands_credits_back_and_stays_open,
            settle_hold_reports_an_expiry_no_sweep_has_committed,
            usage_draws_from_the_senders_holds_first,
            deduction_order_default_and_configured,
            grants_by_reference_are_idempotent_and_expire,
            a_grant_reference_reused_with_other_terms_is_refused,
            statement_burn_rate_and_depletion,
            alerts_fire_once_and_are_audited,
            plan_funds_usage_past_grants_up_to_the_cap,
            plan_room_reserved_by_a_hold_is_not_taken_by_other_usage,
            a_post_cut_by_a_lowered_cap_records_the_rest_as_overrun,
            multi_tenant_batches_stay_apart,
            bad_input_is_refused_with_a_reason,
            attribution_and_tasks_are_stored,
        );
    };
    (@cases $fresh:path; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                if let Some(open) = $fresh().await {
                    store_suite::$case(open).await;
                }
            }
        )*
    };
}
pub use store_suite;

//! The outbox's `next_seq` file cannot be written for a while (its temporary name is made a
//! folder) while an agent spends, and the sidecar restarts during the fault: the sidecar
//! keeps the records in the rings and retries, and once the fault clears the authority has
//! every call exactly once. (Before the fix each failed attempt left a batch file behind,
//! each holding the same records plus the newer ones, under sequences the authority had not
//! seen; the restarted sidecar replayed them all, posting those calls several times.)

mod common;

use tollgate_client::Gate;

use common::*;

#[test]
fn an_unwritable_next_seq_file_loses_and_doubles_no_call() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut auth = Authority::start(dir.path());
    let cfg = auth.sidecar_config(dir.path());
    let state_dir = cfg.state_dir.clone();
    let region = cfg.region.clone();
    let sc = tollgate_sidecar::run::spawn(cfg.clone()).expect("sidecar");
    wait_for_region(&region);

    // One agent for the whole test: its lane stays in use, so every drain sees it.
    let gate = Gate::attach(&region).expect("attach");
    let mut spent = spend(&gate, 30);
    let mut calls = 30;
    wait_for("the first calls to be posted", || {
        auth.statement().calls == calls
    });

    // next_seq cannot be written: every batch the sidecar seals fails to persist. (The
    // sidecar may be mid-write of its own temporary file at that moment: retry.)
    let blocker = state_dir.join("outbox").join("next_seq.tmp");
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
        auth.statement().calls,
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
        auth.statement().calls >= calls
    });
    sc.stop().expect("graceful stop");

    let st = auth.statement();
    assert_eq!(st.calls, calls, "every call posted exactly once");
    assert_eq!(st.total_micro, spent, "to the micro-credit");
    auth.shutdown();
}

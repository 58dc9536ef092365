//! An agent that claims a lane, spends and lets go of it within one drain period, right
//! before a graceful stop: the stop reclaims the lane before it drains, and the lane's calls
//! must still reach the authority.

mod common;

use tollgate_client::Gate;

use common::*;

#[test]
fn calls_of_a_lane_let_go_just_before_a_stop_are_posted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut auth = Authority::start(dir.path());
    let cfg = auth.sidecar_config(dir.path());
    let region = cfg.region.clone();
    let sc = tollgate_sidecar::run::spawn(cfg.clone()).expect("sidecar");
    wait_for_region(&region);

    // First agent: its lane is seen by the drains; its calls are posted.
    let gate = Gate::attach(&region).expect("attach");
    let mut spent = spend(&gate, 30);
    let mut calls = 30;
    wait_for("the first calls to be posted", || {
        auth.statement().calls == calls
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

    let st = auth.statement();
    assert_eq!(st.calls, calls, "every call posted exactly once");
    assert_eq!(st.total_micro, spent, "to the micro-credit");
    auth.shutdown();
}

//! `tollgate demo` end to end, short: the real authority on the embedded store, two
//! sidecars and a small fleet. It must finish with every call posted once, the cap held and
//! the audit chain verified (the run returns an error otherwise).

#[test]
fn a_short_demo_runs_clean() {
    let args = tollgate_demo::cli::DemoArgs {
        duration: std::time::Duration::from_secs(4),
        agents: 6,
        every: 2,
        http: "127.0.0.1:0".parse().unwrap(),
        keep: false,
    };
    tollgate_demo::cli::run(args).expect("the demo's checks pass");
}

/// No simulated fallback: an authority that cannot start fails the demo, saying why.
#[test]
fn an_authority_that_cannot_start_fails_the_demo() {
    let args = tollgate_demo::cli::DemoArgs {
        duration: std::time::Duration::from_secs(3),
        agents: 4,
        every: 1,
        // TEST-NET-1: no interface here has it, so the HTTP port cannot bind.
        http: "192.0.2.1:7071".parse().unwrap(),
        keep: false,
    };
    let e = tollgate_demo::cli::run(args).expect_err("the authority cannot listen there");
    let msg = format!("{e:#}");
    assert!(msg.contains("the authority could not start"), "{msg}");
    assert!(msg.contains("cannot listen on 192.0.2.1:7071"), "{msg}");
}

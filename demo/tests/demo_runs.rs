//! `tollgate demo` end to end, short: the real authority on the embedded store, two
//! sidecars and a small fleet. It must finish with every call posted once, the cap held and
//! the audit chain verified (the run returns an error otherwise).

#[test]
fn a_short_demo_runs_clean() {
    let args = tollgate_demo::cli::DemoArgs {
        duration: std::time::Duration::from_secs(4),
        agents: 6,
        every: 2,
    };
    tollgate_demo::cli::run(args).expect("the demo's checks pass");
}

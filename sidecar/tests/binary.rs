//! The lean `tollgate-sidecar` binary takes exactly the flags of `tollgate sidecar`
//! ([`SidecarArgs`]): the injector runs it in every pod with those flags and variables.

mod common;

use clap::CommandFactory;
use common::sidecar_bin;
use tollgate_sidecar::cli::SidecarArgs;

#[derive(clap::Parser)]
struct Wrapper {
    #[command(flatten)]
    args: SidecarArgs,
}

#[test]
fn help_lists_every_flag_of_the_sidecar_command() {
    let out = sidecar_bin().arg("--help").output().expect("run --help");
    assert!(out.status.success(), "{out:?}");
    let help = String::from_utf8_lossy(&out.stdout);
    let flags: Vec<String> = Wrapper::command()
        .get_arguments()
        .filter_map(|a| a.get_long().map(|l| format!("--{l}")))
        .collect();
    assert!(flags.len() >= 10, "{flags:?}");
    for f in &flags {
        assert!(help.contains(f.as_str()), "{f} missing from:\n{help}");
    }
    assert!(help.contains("TOLLGATE_TENANTS"), "{help}");
}

#[test]
fn version_and_a_missing_flag() {
    let out = sidecar_bin()
        .arg("--version")
        .output()
        .expect("run --version");
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("tollgate-sidecar {}", env!("CARGO_PKG_VERSION"))
    );
    // --tenants is required: a clear usage error, not a start.
    let out = sidecar_bin().output().expect("run without flags");
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--tenants"),
        "{out:?}"
    );
}

//! Command line: `tollgate authority` ([`AuthorityArgs`]) and `tollgate ctl` ([`CtlArgs`]).
pub mod authority;
pub mod ctl;

pub use authority::{AuthorityArgs, run as run_authority};
pub use ctl::{CtlArgs, run as run_ctl};

#[cfg(test)]
mod tests {
    use clap::{CommandFactory, Parser};

    #[derive(Debug, Parser)]
    #[command(name = "tollgate")]
    enum Top {
        Authority(super::AuthorityArgs),
        Ctl(super::CtlArgs),
    }

    #[test]
    fn commands_are_consistent_and_help_lists_them() {
        Top::command().debug_assert();
        let mut ctl = Top::command();
        let help = ctl
            .find_subcommand_mut("ctl")
            .unwrap()
            .render_long_help()
            .to_string();
        for cmd in [
            "tenant",
            "grant",
            "price-book",
            "plan",
            "quota",
            "alert",
            "balance",
            "statement",
            "audit",
        ] {
            assert!(help.contains(cmd), "ctl --help lacks {cmd}: {help}");
        }
        let mut audit = Top::command();
        let audit_help = audit
            .find_subcommand_mut("ctl")
            .unwrap()
            .find_subcommand_mut("audit")
            .unwrap()
            .render_long_help()
            .to_string();
        assert!(audit_help.contains("verify") && audit_help.contains("export"));
    }

    #[test]
    fn parses_examples_and_rejects_bad_input() {
        let t = Top::try_parse_from([
            "tollgate", "ctl", "grant", "add", "acme", "--kind", "trial", "--amount", "12.5",
        ])
        .unwrap();
        assert!(matches!(t, Top::Ctl(_)));
        let t = Top::try_parse_from(["tollgate", "authority", "--listen", "127.0.0.1:0"]).unwrap();
        let Top::Authority(a) = t else { panic!() };
        assert_eq!(a.serve.store, "sqlite://tollgate.db");
        assert!(Top::try_parse_from(["tollgate", "authority", "--listen", "nowhere"]).is_err());
        assert!(
            Top::try_parse_from(["tollgate", "ctl", "audit", "verify", "--file", "x.jsonl"])
                .is_err(),
            "offline verify needs --public-key"
        );
        assert!(Top::try_parse_from(["tollgate", "ctl", "alert", "set", "acme", "a"]).is_err());
        assert_eq!(
            super::ctl::parse_time("--from", "2026-11-01").unwrap(),
            1_793_491_200_000
        );
        assert!(super::ctl::parse_time("--from", "2026-13-01").is_err());
    }

    fn serve_args(extra: &[&str]) -> super::authority::ServeArgs {
        let mut argv = vec!["tollgate", "authority", "--listen", "127.0.0.1:0"];
        argv.extend_from_slice(extra);
        let Top::Authority(a) = Top::try_parse_from(argv).unwrap() else {
            panic!("not the authority command")
        };
        a.serve
    }

    #[test]
    fn store_urls_are_checked_and_postgres_needs_the_shared_key() {
        let err = super::authority::resolve(&serve_args(&["--store", "mysql://u@h/db"]))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("not supported") && err.contains("postgres://"),
            "{err}"
        );
        let err = super::authority::resolve(&serve_args(&[
            "--store",
            "postgres://u:secret@127.0.0.1:5432/test",
        ]))
        .unwrap_err()
        .to_string();
        assert!(err.contains("--signing-key"), "{err}");
        assert!(!err.contains("secret"), "the password leaked: {err}");
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("k");
        crate::keys::generate(&key, false).unwrap();
        let key = key.display().to_string();
        let opts = super::authority::resolve(&serve_args(&[
            "--store",
            "postgres://u@127.0.0.1:5432/test?schema=tg",
            "--signing-key",
            &key,
        ]))
        .unwrap();
        assert_eq!(opts.store, "postgres://u@127.0.0.1:5432/test?schema=tg");
        let t = Top::try_parse_from([
            "tollgate",
            "authority",
            "migrate",
            "--store",
            "postgres://u@h/db",
        ])
        .unwrap();
        assert!(matches!(
            t,
            Top::Authority(super::AuthorityArgs {
                command: Some(super::authority::AuthorityCommand::Migrate(_)),
                ..
            })
        ));
    }
}

//! The authority's integration tests again, on PostgreSQL: the same modules as
//! `tests/authority.rs`, each server on its own schema of the database named by
//! `TOLLGATE_TEST_POSTGRES_URL` (CI sets it and `TOLLGATE_TEST_REQUIRE_SERVICES=1`, so
//! there they run, never skip). Without the URL every test prints `SKIPPED: <name>`.
//! Left out: `audit_tamper`, which edits the SQLite file directly (the ledger's own
//! PostgreSQL tests tamper with the audit table there). Added: `replicas`, two
//! authorities on one database.

const BACKEND: authority::common::Backend = authority::common::Backend::Postgres;

mod authority {
    mod attribution;
    pub mod common;
    mod crash;
    mod ctl;
    mod hardening;
    mod leases;
    mod pricing_models;
    mod replicas;
    mod restart;
    mod security;
    mod session;
    mod tls;
    mod webhook;
}

//! Integration tests of the authority: a real gRPC server on loopback over the SQLite store
//! in a temporary directory. One test binary (faster to link); modules by topic.

const BACKEND: authority::common::Backend = authority::common::Backend::Sqlite;

mod authority {
    mod attribution;
    mod audit_tamper;
    pub mod common;
    mod crash;
    mod ctl;
    mod estimate;
    mod hardening;
    mod http_api;
    mod leases;
    mod pricing_models;
    mod restart;
    mod security;
    mod session;
    mod tls;
    mod webhook;
}

//! # tollgate-demo
//!
//! `tollgate demo`: the whole system on one machine with nothing to install. It starts the
//! authority on the embedded store, two sidecars with separate region folders (two pods) and
//! a simulated fleet of agent threads that reserve and commit through `tollgate-client`, shows
//! live progress, and ends with the tenant's statement and the audit chain verified.
#![forbid(unsafe_code)]

pub mod backend;
pub mod cli;
pub mod fleet;
pub mod scenario;
pub mod setup;

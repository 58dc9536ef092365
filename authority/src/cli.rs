//! Command line: `tollgate authority` ([`AuthorityArgs`]) and `tollgate ctl` ([`CtlArgs`]).
pub mod authority;
pub mod ctl;

pub use authority::{AuthorityArgs, run as run_authority};
pub use ctl::{CtlArgs, run as run_ctl};

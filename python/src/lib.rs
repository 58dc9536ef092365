//! # tollgate (Python): Python agents on the shared-memory fast path
//!
//! The extension module `tollgate._native`, wrapped by the pure-Python package `tollgate`
//! (`python/tollgate/`). It puts Python agents on the same lock-free fast path as Rust ones:
//! every reserve and commit is a `tollgate_client` call on the region the sidecar maps.
//!
//! **Invariants.**
//! - A hold is settled exactly once (commit, cancel, or the cancel of its drop), by the
//!   process that made it.
//! - A fork child never touches its parent's lanes or holds: a gate used in a child
//!   attaches again (its own holder, its own lanes), and whatever the child inherited
//!   (the parent's client gate, holds, the forking thread's lane table) is leaked there,
//!   never released (see [`fork`]).
//! - The GIL (the interpreter's lock) is never held while a reserve waits for the sidecar:
//!   each reserve first runs with `Call::wait(false)`, which never blocks; only when the
//!   lane is dry does the waiting reserve run, detached from the interpreter ([`gate`]).
//!   Under asyncio that waiting reserve runs on an executor thread, so the event loop is
//!   never blocked (`tollgate/_aio.py`).
//! - Money crosses the boundary as integers of micro-credits.
//!
//! Modules: [`gate`] (the `Gate` class, call resolution), [`attachment`] (one process's
//! attachment to the region), [`hold`] (the `Hold` class),
//! [`handles`] (`Tenant`, `Model`, `Task`), [`errors`] (Rust errors to the typed Python
//! exceptions of `tollgate/errors.py`), [`names`] (tiers, initiators, limits as words),
//! [`fork`], [`audit`] (a region's balance, for tests and diagnostics).

use pyo3::prelude::*;

pub mod attachment;
pub mod audit;
pub mod errors;
pub mod fork;
pub mod gate;
pub mod handles;
pub mod hold;
pub mod names;

/// The extension module.
#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<gate::Gate>()?;
    m.add_class::<gate::Pending>()?;
    m.add_class::<hold::Hold>()?;
    m.add_class::<handles::Tenant>()?;
    m.add_class::<handles::Model>()?;
    m.add_class::<handles::Task>()?;
    m.add_class::<handles::Name>()?;
    m.add_function(wrap_pyfunction!(audit::_region_audit, m)?)?;
    m.add_function(wrap_pyfunction!(fork::_fork_generation, m)?)?;
    m.add("REGION_ENV", tollgate_client::REGION_ENV)?;
    m.add("AGENT_ENV", tollgate_client::AGENT_ENV)?;
    m.add(
        "MICROS_PER_CREDIT",
        tollgate_core::credits::MICROS_PER_CREDIT,
    )?;
    fork::register(m)?;
    Ok(())
}

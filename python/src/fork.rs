//! Fork safety: a child never uses its parent's lanes.
//!
//! **Invariant.** Everything tied to the region carries the fork generation it was made in;
//! in a process of a later generation (a fork child) it is neither used nor released, only
//! leaked: the parent keeps using those lanes and holds, and releasing them from the child
//! would settle or flush them twice.
//!
//! The generation is a counter bumped in the child by `os.register_at_fork`
//! (`after_in_child`), so checking it on the hot path is one relaxed load, not a `getpid`
//! system call. The client crate itself forgets the forking thread's lane table in the
//! child (a pid check on its slow paths), so a child's exit does not release the parent's
//! lanes either.

use std::sync::atomic::{AtomicU64, Ordering};

use pyo3::prelude::*;
use pyo3::types::PyDict;

static GENERATION: AtomicU64 = AtomicU64::new(0);

/// This process's fork generation: 0 in the process that imported the module, one more in
/// each fork child (a grandchild: two more, ...).
#[inline]
pub fn generation() -> u64 {
    // A child has one thread when the hook runs, so relaxed is enough.
    GENERATION.load(Ordering::Relaxed)
}

/// Run by Python in a fork child, before any other Python code.
#[pyfunction]
fn after_fork_in_child() {
    GENERATION.fetch_add(1, Ordering::Relaxed);
}

/// The current fork generation (for tests).
#[pyfunction]
pub fn _fork_generation() -> u64 {
    generation()
}

/// Registers the child hook with `os.register_at_fork` (covers `os.fork` and
/// multiprocessing's fork start method).
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    let hook = wrap_pyfunction!(after_fork_in_child, m)?;
    let kwargs = PyDict::new(py);
    kwargs.set_item("after_in_child", hook)?;
    py.import("os")?
        .call_method("register_at_fork", (), Some(&kwargs))?;
    Ok(())
}

//! One attachment to the region, in one process (what a `Gate` uses and a `Hold` keeps).
//!
//! **Invariant.** An attachment made before a fork is never released in the child (see
//! [`crate::fork`]): its drop there leaks the client gate instead of handing the parent's
//! lanes back.

use std::path::Path;
use std::sync::Arc;

use pyo3::prelude::*;

use crate::errors;
use crate::fork;

/// One attachment to the region, in one process.
pub struct Core {
    gate: Arc<tollgate_client::Gate>,
    pub(crate) generation: u64,
}

impl Core {
    /// Attaches as `agent` (else `TOLLGATE_AGENT`, else unnamed).
    pub(crate) fn attach(py: Python<'_>, path: &Path, agent: Option<&str>) -> PyResult<Core> {
        let mut options = tollgate_client::GateOptions::new();
        if let Some(a) = agent {
            options = options.agent(a);
        }
        let gate = tollgate_client::Gate::attach_with(path, &options)
            .map_err(|e| errors::attach(py, &e, &path.display().to_string()))?;
        Ok(Core {
            gate: Arc::new(gate),
            generation: fork::generation(),
        })
    }

    pub(crate) fn gate(&self) -> &tollgate_client::Gate {
        &self.gate
    }
}

impl Drop for Core {
    fn drop(&mut self) {
        if self.generation != fork::generation() {
            // A fork child's copy of its parent's gate: dropping it would hand the
            // parent's lanes back to the sidecar. One reference leaked keeps it alive.
            std::mem::forget(Arc::clone(&self.gate));
        }
    }
}

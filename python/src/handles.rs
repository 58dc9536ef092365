//! Names resolved once: `Tenant`, `Model` and `Task` handles.
//!
//! **Invariant.** A `Tenant` is an index into one region's tenant table, so it is only
//! accepted by the gate that resolved it (checked by the gate's id); a `Model` is a price
//! book entry (rated by name once the book it was resolved in is replaced) and a `Task` a
//! budget, both usable with any gate.

use std::sync::Arc;

use pyo3::prelude::*;
use tollgate_client::TenantId;
use tollgate_core::Credits;

/// A tenant of the region, resolved once with `Gate.tenant(name)`.
#[pyclass(module = "tollgate._native", frozen)]
pub struct Tenant {
    pub(crate) id: TenantId,
    pub(crate) gate: u64,
    name: String,
}

impl Tenant {
    pub(crate) fn new(id: TenantId, gate: u64, name: String) -> Tenant {
        Tenant { id, gate, name }
    }
}

#[pymethods]
impl Tenant {
    /// The tenant's name.
    #[getter]
    fn name(&self) -> &str {
        &self.name
    }

    fn __repr__(&self) -> String {
        format!("Tenant({:?})", self.name)
    }
}

/// A model of the region's price book, resolved once with `Gate.model(name)`.
#[pyclass(module = "tollgate._native", frozen)]
pub struct Model {
    pub(crate) inner: Arc<tollgate_client::Model>,
}

#[pymethods]
impl Model {
    /// The model's name in the price book.
    #[getter]
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn __repr__(&self) -> String {
        format!("Model({:?})", self.inner.name())
    }
}

/// What a hold keeps of its task.
pub struct TaskShared {
    pub(crate) id: String,
    pub(crate) task: tollgate_client::Task,
}

/// A task: a budget that every call made with `task=` also spends, refused with
/// `TaskExhausted` once spent (the task is out, not the tenant). Open it with
/// `Gate.open_task`.
#[pyclass(module = "tollgate._native", frozen)]
pub struct Task {
    pub(crate) inner: Arc<TaskShared>,
}

impl Task {
    pub(crate) fn open(id: String, budget: u64) -> Task {
        Task {
            inner: Arc::new(TaskShared {
                id,
                task: tollgate_client::Task::new(Credits(budget)),
            }),
        }
    }
}

#[pymethods]
impl Task {
    /// The task's id.
    #[getter]
    fn id(&self) -> &str {
        &self.inner.id
    }

    /// The budget it was opened with, in micro-credits.
    #[getter]
    fn budget(&self) -> u64 {
        self.inner.task.budget().0
    }

    /// What is left, in micro-credits (holds in flight count as spent until settled).
    #[getter]
    fn remaining(&self) -> u64 {
        self.inner.task.remaining().0
    }

    fn __repr__(&self) -> String {
        format!(
            "Task({:?}, budget={}, remaining={})",
            self.inner.id,
            self.budget(),
            self.remaining()
        )
    }
}

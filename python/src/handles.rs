//! Names resolved once: `Tenant`, `Model`, `Name` (agent, feature) and `Task` handles.
//!
//! **Invariant.** A `Tenant` and a `Name` (agent, feature) are indexes into one region's
//! tables, so they are only accepted by the gate that resolved them (checked by the gate's
//! id); a `Model` is a price book entry (rated by name once the book it was resolved in is
//! replaced). A `Task` belongs to the process that opened it: a fork child opens it again.

use std::sync::Arc;

use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use tollgate_client::{AgentName, Feature, TenantId};

use crate::errors;
use crate::fork;

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

/// A name interned in the region's name table: an agent (`Gate.agent`) or a feature
/// (`Gate.feature`).
#[pyclass(module = "tollgate._native", frozen)]
pub struct Name {
    pub(crate) id: NameId,
    pub(crate) gate: u64,
    name: String,
}

/// An interned name of either kind.
#[derive(Clone, Copy)]
pub enum NameId {
    Agent(AgentName),
    Feature(Feature),
}

impl Name {
    pub(crate) fn new(id: NameId, gate: u64, name: String) -> Name {
        Name { id, gate, name }
    }
}

#[pymethods]
impl Name {
    /// The name.
    #[getter]
    fn name(&self) -> &str {
        &self.name
    }

    fn __repr__(&self) -> String {
        match self.id {
            NameId::Agent(_) => format!("Agent({:?})", self.name),
            NameId::Feature(_) => format!("Feature({:?})", self.name),
        }
    }
}

/// What a hold keeps of its task.
pub struct TaskShared {
    pub(crate) task: tollgate_client::Task,
    /// The fork generation it was opened in (a child opens it again).
    pub(crate) generation: u64,
}

/// A named task: a budget and a call limit shared by every process (and pod) of the tenant
/// that opens the same id. Calls made with `task=` spend it and are refused with
/// `TaskExhausted` once it is spent (the task is out, not the tenant); `complete()` records
/// one Agentic Work Unit and refuses later calls. Open it with `Gate.open_task`.
#[pyclass(module = "tollgate._native", frozen)]
pub struct Task {
    pub(crate) inner: Arc<TaskShared>,
}

impl Task {
    pub(crate) fn new(task: tollgate_client::Task) -> Task {
        Task {
            inner: Arc::new(TaskShared {
                task,
                generation: fork::generation(),
            }),
        }
    }

    /// The task, unless this is a fork child of the process that opened it.
    pub(crate) fn shared(&self, py: Python<'_>) -> PyResult<Arc<TaskShared>> {
        if self.inner.generation != fork::generation() {
            return Err(PyRuntimeError::new_err(format!(
                "task {:?} was opened by the parent process: open it again in this fork child (Gate.open_task joins it)",
                self.inner.task.id()
            )));
        }
        let _ = py;
        Ok(self.inner.clone())
    }
}

#[pymethods]
impl Task {
    /// The task's id.
    #[getter]
    fn id(&self) -> &str {
        self.inner.task.id()
    }

    /// The budget it was opened with, in micro-credits.
    #[getter]
    fn budget(&self) -> u64 {
        self.inner.task.budget().0
    }

    /// Most calls it may make (0: no limit).
    #[getter]
    fn max_calls(&self) -> u32 {
        self.inner.task.max_calls()
    }

    /// What is left of it in this pod as far as this process knows, in micro-credits
    /// (holds in flight count as spent until settled).
    #[getter]
    fn remaining(&self) -> u64 {
        self.inner.task.remaining().0
    }

    /// Whether it was completed (by any process of the pod).
    #[getter]
    fn completed(&self) -> bool {
        self.inner.task.is_completed()
    }

    /// Completes the task: one Agentic Work Unit for its agent; later calls on it are
    /// refused. Completing it twice raises `TaskExhausted` (`why == "completed"`).
    fn complete(&self, py: Python<'_>) -> PyResult<()> {
        let shared = self.shared(py)?;
        py.detach(move || shared.task.complete())
            .map_err(|e| errors::reserve(py, &e))
    }

    fn __repr__(&self) -> String {
        format!(
            "Task({:?}, budget={}, remaining={})",
            self.id(),
            self.budget(),
            self.remaining()
        )
    }
}

//! The client's typed errors as the typed Python exceptions of `tollgate/errors.py`
//! (defined in Python, so they carry attributes, pickle and show in stubs like any other).
//!
//! Each exception gets the client error's message (which says what to do) and its fields
//! as attributes; amounts stay integers of micro-credits.

use pyo3::IntoPyObjectExt;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyType};
use tollgate_client::{AttachError, CommitError, ReserveError, TaskLimit};

const MODULE: &str = "tollgate.errors";

static ATTACH: PyOnceLock<Py<PyType>> = PyOnceLock::new();
static RESERVE: PyOnceLock<Py<PyType>> = PyOnceLock::new();
static DENIED: PyOnceLock<Py<PyType>> = PyOnceLock::new();
static TASK_EXHAUSTED: PyOnceLock<Py<PyType>> = PyOnceLock::new();
static COMMIT: PyOnceLock<Py<PyType>> = PyOnceLock::new();
static HOLD_CLOSED: PyOnceLock<Py<PyType>> = PyOnceLock::new();

/// An instance of `tollgate.errors.<name>` built with `message` and `kwargs`, as a `PyErr`
/// (or the error importing it raised).
fn raise(
    py: Python<'_>,
    class: &'static PyOnceLock<Py<PyType>>,
    name: &str,
    message: String,
    kwargs: &[(&str, Py<PyAny>)],
) -> PyErr {
    let built = (|| -> PyResult<PyErr> {
        let ty = class.import(py, MODULE, name)?;
        let kw = PyDict::new(py);
        for (k, v) in kwargs {
            kw.set_item(*k, v)?;
        }
        Ok(PyErr::from_value(ty.call((message,), Some(&kw))?))
    })();
    built.unwrap_or_else(|e| e)
}

fn obj<'py, T: IntoPyObjectExt<'py>>(py: Python<'py>, v: T) -> Py<PyAny> {
    v.into_py_any(py).unwrap_or_else(|_| py.None())
}

/// `AttachError` with the reason word and the path tried.
pub fn attach(py: Python<'_>, e: &AttachError, path: &str) -> PyErr {
    let reason = match e {
        AttachError::NotFound { .. } => "not_found",
        AttachError::Unfinished => "unfinished",
        AttachError::ForeignMagic { .. } => "foreign_magic",
        AttachError::VersionMismatch { .. } => "version_mismatch",
        AttachError::Truncated { .. } => "truncated",
        AttachError::Corrupt { .. } => "corrupt",
        AttachError::Holders { .. } => "holders",
        AttachError::AgentName { .. } => "agent_name",
        _ => "io",
    };
    raise(
        py,
        &ATTACH,
        "AttachError",
        e.to_string(),
        &[("reason", obj(py, reason)), ("path", obj(py, path))],
    )
}

/// `Denied`, `TaskExhausted` (naming the task) or `ReserveError` with a reason word.
pub fn reserve(py: Python<'_>, e: &ReserveError) -> PyErr {
    match e {
        ReserveError::Denied(d) => raise(
            py,
            &DENIED,
            "Denied",
            e.to_string(),
            &[
                ("limit", obj(py, d.limit.map(crate::names::limit))),
                ("horizon", obj(py, d.horizon.map(|h| h.as_str()))),
                ("retry_after", obj(py, d.retry_after.as_secs_f64())),
                ("tier", obj(py, d.tier.as_str())),
                ("needed", obj(py, d.needed.0)),
            ],
        ),
        ReserveError::TaskExhausted {
            task,
            why,
            needed,
            remaining,
        } => raise(
            py,
            &TASK_EXHAUSTED,
            "TaskExhausted",
            format!("task {task:?}: {e}"),
            &[
                ("task", obj(py, task.as_str())),
                ("why", obj(py, task_limit(*why))),
                ("needed", obj(py, needed.0)),
                ("remaining", obj(py, remaining.0)),
            ],
        ),
        other => {
            let reason = match other {
                ReserveError::UnknownTenant(_) => "unknown_tenant",
                ReserveError::NoClass { .. } => "no_class",
                ReserveError::NoFreeLane => "no_free_lane",
                ReserveError::TooManyOutstanding => "too_many_outstanding",
                ReserveError::Rating(tollgate_core::RatingError::UnknownModel(_)) => {
                    "unknown_model"
                }
                ReserveError::Rating(_) => "rating",
                ReserveError::TooLarge(_) => "too_large",
                ReserveError::PriceBook(_) => "price_book",
                ReserveError::Liveness(_) => "liveness",
                ReserveError::WouldWait => "would_wait",
                ReserveError::InvalidName { .. } => "invalid_name",
                ReserveError::NameTableFull { .. } => "name_table_full",
                ReserveError::TaskTableFull { .. } => "task_table_full",
                _ => "error",
            };
            raise(
                py,
                &RESERVE,
                "ReserveError",
                other.to_string(),
                &[("reason", obj(py, reason))],
            )
        }
    }
}

fn task_limit(why: TaskLimit) -> &'static str {
    match why {
        TaskLimit::Budget => "budget",
        TaskLimit::MaxCalls => "max_calls",
        TaskLimit::Completed => "completed",
        _ => "other",
    }
}

/// `CommitError`: `rating` (the full reservation, `charged`, was charged) or `reclaimed`.
pub fn commit(py: Python<'_>, e: &CommitError, charged: u64) -> PyErr {
    let (reason, charged) = match e {
        CommitError::Rating(_) => ("rating", charged),
        _ => ("reclaimed", 0),
    };
    raise(
        py,
        &COMMIT,
        "CommitError",
        e.to_string(),
        &[("reason", obj(py, reason)), ("charged", obj(py, charged))],
    )
}

/// `HoldClosed` (`closed` or `forked`).
pub fn hold_closed(py: Python<'_>, reason: &'static str) -> PyErr {
    let message = match reason {
        "forked" => {
            "this hold belongs to the parent process (it was made before a fork): the child cannot settle it"
        }
        _ => "this hold is already committed or cancelled",
    };
    raise(
        py,
        &HOLD_CLOSED,
        "HoldClosed",
        message.to_owned(),
        &[("reason", obj(py, reason))],
    )
}

//! `Gate`: a Python agent's handle on the region, and how a call is reserved.
//!
//! **Invariant.** The GIL is never held while a reserve waits. Every reserve first runs
//! with `Call::wait(false)` (the hot path: tens of nanoseconds, never blocks); only a dry
//! lane, which must wait a bounded time for the sidecar's top-up, runs the waiting reserve,
//! detached from the interpreter (`reserve`) or on an executor thread (`reserve_async`,
//! through [`Pending`]).
//!
//! A gate is tied to the process that attached it: in a fork child the first call attaches
//! again (see [`crate::fork`]); names resolved by the parent stay valid (same region).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyString, PyType};
use tollgate_client::{
    AgentName, Feature, REGION_ENV, ReserveError, TaskLimit, TaskSpec, TenantId,
};
use tollgate_core::Credits;

use crate::attachment::Core;
use crate::errors;
use crate::fork;
use crate::handles::{Model, Name, NameId, Task, Tenant};
use crate::hold::{self, Hold, HoldCell, Knobs, Owners};
use crate::names;

static NEXT_GATE: AtomicU64 = AtomicU64::new(1);

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A Python agent's handle on the sidecar's region: resolve tenants, models and tasks
/// once, then `reserve` before every LLM call. One per process is typical; share it
/// between threads freely (each thread gets lanes of its own).
///
/// `Gate()` attaches to the region named by `TOLLGATE_REGION`; `Gate(path)` to `path`.
/// `tenant=` sets the tenant of calls that name none (default: the region's first).
/// `max_wait=` (seconds, default 0.25) is how long a call on a dry lane waits for the
/// sidecar's top-up before `Denied` (a thread's first call finds its lane dry); a limit the
/// sidecar knows is spent is denied at once. The GIL is released while waiting.
#[pyclass(module = "tollgate._native", frozen)]
pub struct Gate {
    /// Tenant handles carry it: they index this region's table.
    id: u64,
    path: PathBuf,
    core: Arc<Core>,
    /// The attachment of a fork child (the generation's own), made at its first call.
    child: Mutex<Option<Arc<Core>>>,
    tenant: TenantId,
    /// The agent name it attached with (again in a fork child).
    agent: Option<String>,
    /// How long a dry lane may wait for the sidecar's top-up.
    max_wait: Duration,
    tenants: Mutex<HashMap<String, TenantId>>,
    models: Mutex<HashMap<String, Arc<tollgate_client::Model>>>,
    agents: Mutex<HashMap<String, AgentName>>,
    features: Mutex<HashMap<String, Feature>>,
}

impl Gate {
    /// This process's attachment (attached again in a fork child).
    #[inline]
    fn core(&self, py: Python<'_>) -> PyResult<Arc<Core>> {
        if self.core.generation == fork::generation() {
            return Ok(self.core.clone());
        }
        self.child_core(py)
    }

    #[cold]
    fn child_core(&self, py: Python<'_>) -> PyResult<Arc<Core>> {
        let generation = fork::generation();
        let mut child = lock(&self.child);
        if let Some(c) = child.as_ref()
            && c.generation == generation
        {
            return Ok(c.clone());
        }
        let c = Arc::new(Core::attach(py, &self.path, self.agent.as_deref())?);
        // An earlier generation's attachment is leaked by its drop.
        *child = Some(c.clone());
        Ok(c)
    }

    fn resolve_tenant(&self, py: Python<'_>, name: &str) -> PyResult<TenantId> {
        if let Some(t) = lock(&self.tenants).get(name) {
            return Ok(*t);
        }
        let id = self
            .core(py)?
            .gate()
            .tenant(name)
            .map_err(|e| errors::reserve(py, &e))?;
        lock(&self.tenants).insert(name.to_owned(), id);
        Ok(id)
    }

    fn resolve_model(&self, py: Python<'_>, name: &str) -> PyResult<Arc<tollgate_client::Model>> {
        if let Some(m) = lock(&self.models).get(name) {
            return Ok(m.clone());
        }
        let m = Arc::new(
            self.core(py)?
                .gate()
                .model(name)
                .map_err(|e| errors::reserve(py, &e))?,
        );
        lock(&self.models).insert(name.to_owned(), m.clone());
        Ok(m)
    }

    fn resolve_name(&self, py: Python<'_>, name: &str, agent: bool) -> PyResult<NameId> {
        if agent {
            if let Some(a) = lock(&self.agents).get(name) {
                return Ok(NameId::Agent(*a));
            }
        } else if let Some(f) = lock(&self.features).get(name) {
            return Ok(NameId::Feature(*f));
        }
        let core = self.core(py)?;
        let id = if agent {
            core.gate().agent(name).map(NameId::Agent)
        } else {
            core.gate().feature(name).map(NameId::Feature)
        }
        .map_err(|e| errors::reserve(py, &e))?;
        match id {
            NameId::Agent(a) => {
                lock(&self.agents).insert(name.to_owned(), a);
            }
            NameId::Feature(f) => {
                lock(&self.features).insert(name.to_owned(), f);
            }
        }
        Ok(id)
    }

    /// An agent or feature given as a name or a `Name` of this gate.
    fn name_of(
        &self,
        py: Python<'_>,
        n: Option<&Bound<'_, PyAny>>,
        agent: bool,
    ) -> PyResult<Option<NameId>> {
        let Some(n) = n else {
            return Ok(None);
        };
        let what = if agent { "agent" } else { "feature" };
        if let Ok(h) = n.cast::<Name>() {
            let h = h.get();
            if h.gate != self.id || matches!(h.id, NameId::Agent(_)) != agent {
                return Err(PyValueError::new_err(format!(
                    "{what}= takes a name or a handle from this gate's {what}()"
                )));
            }
            return Ok(Some(h.id));
        }
        match n.cast::<PyString>() {
            Ok(s) => self.resolve_name(py, s.to_str()?, agent).map(Some),
            Err(_) => Err(PyTypeError::new_err(format!(
                "{what}= takes a name (str) or a handle from {what}()"
            ))),
        }
    }

    /// A tenant given as a name or a `Tenant` of this gate.
    fn tenant_of(&self, py: Python<'_>, t: Option<&Bound<'_, PyAny>>) -> PyResult<TenantId> {
        let Some(t) = t else {
            return Ok(self.tenant);
        };
        if let Ok(h) = t.cast::<Tenant>() {
            let h = h.get();
            if h.gate != self.id {
                return Err(PyValueError::new_err(
                    "this Tenant was resolved by another Gate (another region): resolve it with this gate's tenant()",
                ));
            }
            return Ok(h.id);
        }
        match t.cast::<PyString>() {
            Ok(s) => self.resolve_tenant(py, s.to_str()?),
            Err(_) => Err(PyTypeError::new_err(
                "tenant= takes a tenant name (str) or a Tenant",
            )),
        }
    }

    /// A model given as a name or a `Model`.
    fn model_of(
        &self,
        py: Python<'_>,
        m: &Bound<'_, PyAny>,
    ) -> PyResult<Arc<tollgate_client::Model>> {
        if let Ok(h) = m.cast::<Model>() {
            return Ok(h.get().inner.clone());
        }
        match m.cast::<PyString>() {
            Ok(s) => self.resolve_model(py, s.to_str()?),
            Err(_) => Err(PyTypeError::new_err(
                "model= takes a model name (str) or a Model",
            )),
        }
    }

    /// The call's owners and knobs.
    #[allow(clippy::too_many_arguments)]
    fn resolve(
        &self,
        py: Python<'_>,
        model: Option<&Bound<'_, PyAny>>,
        input_tokens: u64,
        max_output_tokens: Option<u64>,
        cost: Option<u64>,
        tier: &str,
        initiator: &str,
        tenant: Option<&Bound<'_, PyAny>>,
        task: Option<&Bound<'_, Task>>,
        agent: Option<&Bound<'_, PyAny>>,
        feature: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<(Owners, Knobs)> {
        let (model, cost) = match (model, cost) {
            (Some(m), None) => (Some(self.model_of(py, m)?), 0),
            (None, Some(c)) => (None, c),
            (Some(_), Some(_)) => {
                return Err(PyValueError::new_err(
                    "give model= (rated by the price book) or cost= (pre-rated, in micro-credits), not both",
                ));
            }
            (None, None) => {
                return Err(PyValueError::new_err(
                    "give model= (rated by the price book) or cost= (pre-rated, in micro-credits)",
                ));
            }
        };
        let knobs = Knobs {
            cost,
            tenant: self.tenant_of(py, tenant)?,
            tier: names::tier(tier)?,
            initiator: names::initiator(initiator)?,
            input_tokens,
            max_output_tokens,
            agent: match self.name_of(py, agent, true)? {
                Some(NameId::Agent(a)) => Some(a),
                _ => None,
            },
            feature: match self.name_of(py, feature, false)? {
                Some(NameId::Feature(f)) => Some(f),
                _ => None,
            },
            outcomes: 0,
        };
        let owners = Owners {
            core: self.core(py)?,
            model,
            task: match task {
                Some(t) => Some(t.get().shared(py)?),
                None => None,
            },
        };
        Ok((owners, knobs))
    }
}

/// Reserves without waiting, holding the GIL: `Ok` a hold, or `Err` what to do instead.
enum First {
    Held(HoldCell),
    MustWait(Owners),
    Failed(PyErr),
}

/// Whether `e` means "wait for the sidecar": a dry lane, or a named task refused for its
/// budget while it still has what the call needs (its lane's lease from the authority is
/// in flight: a task's first calls).
fn must_wait(e: &ReserveError) -> bool {
    match e {
        ReserveError::WouldWait => true,
        ReserveError::TaskExhausted {
            why: TaskLimit::Budget,
            needed,
            remaining,
            ..
        } => remaining.0 >= needed.0,
        _ => false,
    }
}

fn first_try(py: Python<'_>, owners: Owners, knobs: &Knobs) -> First {
    match hold::reserve(owners, knobs, false) {
        Ok(cell) => First::Held(cell),
        Err((o, e)) if must_wait(&e) => First::MustWait(o),
        Err((_, e)) => First::Failed(errors::reserve(py, &e)),
    }
}

/// The waiting reserve, detached from the interpreter.
fn wait_and_reserve(
    py: Python<'_>,
    owners: Owners,
    knobs: Knobs,
    max_wait: Duration,
) -> PyResult<Hold> {
    match py.detach(move || waiting_reserve(owners, &knobs, max_wait)) {
        Ok(cell) => Ok(Hold::new(cell)),
        Err((_, e)) => Err(errors::reserve(py, &e)),
    }
}

/// How often a dry lane is looked at again while waiting for the sidecar.
const POLL: Duration = Duration::from_micros(250);

/// Waits up to `max_wait` for the sidecar to top the dry lane up (a lane's first top-up
/// takes a sidecar tick, ~10 ms), looking again every [`POLL`] without waiting in the
/// client (so no denial is counted meanwhile); then one reserve with the client's own
/// bounded wait, which denies with the limit the sidecar recorded. A limit the sidecar has
/// marked as spent denies at once, on the first look.
fn waiting_reserve(
    mut owners: Owners,
    knobs: &Knobs,
    max_wait: Duration,
) -> Result<HoldCell, (Owners, ReserveError)> {
    let deadline = Instant::now() + max_wait;
    loop {
        match hold::reserve(owners, knobs, false) {
            Err((o, e)) if must_wait(&e) && Instant::now() < deadline => {
                owners = o;
                std::thread::sleep(POLL);
            }
            Err((o, e)) if must_wait(&e) => return hold::reserve(o, knobs, true),
            done => return done,
        }
    }
}

static RESERVING: PyOnceLock<Py<PyType>> = PyOnceLock::new();

/// A reserve left to an executor thread by `reserve_async` (its lane was dry).
#[pyclass(module = "tollgate._native", frozen)]
pub struct Pending {
    call: Mutex<Option<(Owners, Knobs)>>,
    max_wait: Duration,
}

#[pymethods]
impl Pending {
    /// Runs the waiting reserve (GIL released while it waits); once.
    fn wait(&self, py: Python<'_>) -> PyResult<Hold> {
        let Some((owners, knobs)) = lock(&self.call).take() else {
            return Err(errors::hold_closed(py, "closed"));
        };
        if owners.core.generation != fork::generation() {
            return Err(errors::hold_closed(py, "forked"));
        }
        wait_and_reserve(py, owners, knobs, self.max_wait)
    }
}

/// Default of `max_wait`, in seconds: several idle sidecar ticks and a lease round trip to
/// the authority, so a lane's first top-up (a thread's first call) is waited for rather
/// than denied; short next to an LLM call.
const DEFAULT_MAX_WAIT: f64 = 0.25;

/// `max_wait` seconds as a duration: 0 to 60.
fn max_wait_of(seconds: f64) -> PyResult<Duration> {
    if !(0.0..=60.0).contains(&seconds) {
        return Err(PyValueError::new_err(
            "max_wait is in seconds, from 0 to 60",
        ));
    }
    Ok(Duration::from_secs_f64(seconds))
}

/// Where `TOLLGATE_REGION` points, or `AttachError(not_found)`.
fn path_from_env(py: Python<'_>) -> PyResult<PathBuf> {
    match std::env::var_os(REGION_ENV) {
        Some(p) if !p.is_empty() => Ok(PathBuf::from(p)),
        _ => Err(errors::attach(
            py,
            &tollgate_client::AttachError::NotFound {
                path: format!("${REGION_ENV} (not set)"),
            },
            "",
        )),
    }
}

#[pymethods]
impl Gate {
    #[new]
    #[pyo3(signature = (path=None, *, agent=None, tenant=None, max_wait=DEFAULT_MAX_WAIT))]
    fn new(
        py: Python<'_>,
        path: Option<PathBuf>,
        agent: Option<String>,
        tenant: Option<&str>,
        max_wait: f64,
    ) -> PyResult<Gate> {
        let max_wait = max_wait_of(max_wait)?;
        let path = match path {
            Some(p) => p,
            None => path_from_env(py)?,
        };
        let core = Core::attach(py, &path, agent.as_deref())?;
        let mut gate = Gate {
            id: NEXT_GATE.fetch_add(1, Ordering::Relaxed),
            path,
            core: Arc::new(core),
            child: Mutex::new(None),
            tenant: TenantId(0),
            agent,
            max_wait,
            tenants: Mutex::new(HashMap::new()),
            models: Mutex::new(HashMap::new()),
            agents: Mutex::new(HashMap::new()),
            features: Mutex::new(HashMap::new()),
        };
        if let Some(name) = tenant {
            gate.tenant = gate.resolve_tenant(py, name)?;
        }
        Ok(gate)
    }

    /// Attaches to the region at `path` (see the class docs for the options).
    #[classmethod]
    #[pyo3(signature = (path, *, agent=None, tenant=None, max_wait=DEFAULT_MAX_WAIT))]
    fn attach(
        _cls: &Bound<'_, PyType>,
        py: Python<'_>,
        path: PathBuf,
        agent: Option<String>,
        tenant: Option<&str>,
        max_wait: f64,
    ) -> PyResult<Gate> {
        Gate::new(py, Some(path), agent, tenant, max_wait)
    }

    /// Attaches to the region named by `TOLLGATE_REGION`.
    #[classmethod]
    #[pyo3(signature = (*, agent=None, tenant=None, max_wait=DEFAULT_MAX_WAIT))]
    fn from_env(
        _cls: &Bound<'_, PyType>,
        py: Python<'_>,
        agent: Option<String>,
        tenant: Option<&str>,
        max_wait: f64,
    ) -> PyResult<Gate> {
        Gate::new(py, None, agent, tenant, max_wait)
    }

    /// The name this process's calls are made as ("" if unnamed): `agent=`, else
    /// `TOLLGATE_AGENT`.
    #[getter]
    fn agent_name(&self, py: Python<'_>) -> PyResult<String> {
        Ok(self.core(py)?.gate().agent_name().to_owned())
    }

    /// Resolves an agent name (once; calls may also pass the name): calls made with it are
    /// attributed to that agent and limited by its quotas.
    fn agent(&self, py: Python<'_>, name: &str) -> PyResult<Name> {
        let id = self.resolve_name(py, name, true)?;
        Ok(Name::new(id, self.id, name.to_owned()))
    }

    /// Resolves a feature name (once; calls may also pass the name).
    fn feature(&self, py: Python<'_>, name: &str) -> PyResult<Name> {
        let id = self.resolve_name(py, name, false)?;
        Ok(Name::new(id, self.id, name.to_owned()))
    }

    /// The region's path.
    #[getter]
    fn path(&self) -> String {
        self.path.display().to_string()
    }

    /// Resolves a tenant name (once; calls may also pass the name).
    fn tenant(&self, py: Python<'_>, name: &str) -> PyResult<Tenant> {
        let id = self.resolve_tenant(py, name)?;
        Ok(Tenant::new(id, self.id, name.to_owned()))
    }

    /// Resolves a model of the price book (once; calls may also pass the name).
    fn model(&self, py: Python<'_>, name: &str) -> PyResult<Model> {
        Ok(Model {
            inner: self.resolve_model(py, name)?,
        })
    }

    /// Opens the task `task_id` with `budget` micro-credits and at most `max_calls` calls
    /// (0: no limit), or joins it if a process of the pod opened it already (its first
    /// terms hold). Calls made with `task=` spend it and are refused with `TaskExhausted`
    /// past it; `agent=` is who its completion (a work unit) is credited to.
    #[pyo3(signature = (task_id, *, budget, max_calls=0, tenant=None, agent=None))]
    fn open_task(
        &self,
        py: Python<'_>,
        task_id: String,
        budget: u64,
        max_calls: u32,
        tenant: Option<&Bound<'_, PyAny>>,
        agent: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Task> {
        let mut spec = TaskSpec::new(task_id)
            .tenant(self.tenant_of(py, tenant)?)
            .budget(Credits(budget))
            .max_calls(max_calls);
        if let Some(NameId::Agent(a)) = self.name_of(py, agent, true)? {
            spec = spec.agent(a);
        }
        let core = self.core(py)?;
        let task = py
            .detach(move || core.gate().open_task(&spec))
            .map_err(|e| errors::reserve(py, &e))?;
        Ok(Task::new(task))
    }

    /// Reports `outcomes` on their own (e.g. a ticket resolved after its calls): rated by
    /// the model's per-outcome price (or at `cost`), reserved and committed at once with
    /// the call fields given; denied like any call. Returns the charge in micro-credits.
    #[pyo3(signature = (model=None, *, outcomes, cost=None, tier="interactive",
        initiator="human", tenant=None, task=None, agent=None, feature=None))]
    #[allow(clippy::too_many_arguments)]
    fn report_outcomes(
        &self,
        py: Python<'_>,
        model: Option<&Bound<'_, PyAny>>,
        outcomes: u32,
        cost: Option<u64>,
        tier: &str,
        initiator: &str,
        tenant: Option<&Bound<'_, PyAny>>,
        task: Option<&Bound<'_, Task>>,
        agent: Option<&Bound<'_, PyAny>>,
        feature: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<u64> {
        let (owners, knobs) = self.resolve(
            py, model, 0, None, cost, tier, initiator, tenant, task, agent, feature,
        )?;
        let report = |o: &Owners, wait: bool| {
            o.core
                .gate()
                .report_outcomes(&knobs.call(o, wait), outcomes)
        };
        let charged = match report(&owners, false) {
            Err(ReserveError::WouldWait) => {
                let max_wait = self.max_wait;
                py.detach(|| {
                    let deadline = Instant::now() + max_wait;
                    loop {
                        match report(&owners, false) {
                            Err(ReserveError::WouldWait) if Instant::now() < deadline => {
                                std::thread::sleep(POLL)
                            }
                            Err(ReserveError::WouldWait) => return report(&owners, true),
                            done => return done,
                        }
                    }
                })
            }
            done => done,
        };
        charged.map(|c| c.0).map_err(|e| errors::reserve(py, &e))
    }

    /// Reserves credits for one call, against all of its limits (and its task) at once,
    /// and returns the `Hold`. A model call is rated by the price book at its maximum
    /// (`input_tokens` plus `max_output_tokens`, or the book's maximum); a pre-rated call
    /// gives `cost` in micro-credits instead of `model`. The call is attributed to `tenant`
    /// (default: the gate's), `agent` (default: the gate's agent name), `feature` and
    /// `task`, at `tier` (`interactive`, `scheduler`, `background`) and `initiator`
    /// (`human`, `agent`). A call that may produce `outcomes` (a resolved ticket, committed
    /// with `hold.commit(..., outcomes=n)`) reserves for them too; outcomes committed past
    /// what was reserved are an overrun.
    ///
    /// Raises `Denied` (a limit is out: back off `retry_after` seconds), `TaskExhausted`,
    /// or `ReserveError`. Never holds the GIL while it waits for the sidecar (a dry lane:
    /// at most the gate's `max_wait`).
    #[pyo3(signature = (model=None, *, input_tokens=0, max_output_tokens=None, cost=None,
        tier="interactive", initiator="human", tenant=None, task=None, agent=None, feature=None,
        outcomes=0))]
    #[allow(clippy::too_many_arguments)]
    fn reserve(
        &self,
        py: Python<'_>,
        model: Option<&Bound<'_, PyAny>>,
        input_tokens: u64,
        max_output_tokens: Option<u64>,
        cost: Option<u64>,
        tier: &str,
        initiator: &str,
        tenant: Option<&Bound<'_, PyAny>>,
        task: Option<&Bound<'_, Task>>,
        agent: Option<&Bound<'_, PyAny>>,
        feature: Option<&Bound<'_, PyAny>>,
        outcomes: u32,
    ) -> PyResult<Hold> {
        let (owners, mut knobs) = self.resolve(
            py,
            model,
            input_tokens,
            max_output_tokens,
            cost,
            tier,
            initiator,
            tenant,
            task,
            agent,
            feature,
        )?;
        knobs.outcomes = outcomes;
        match first_try(py, owners, &knobs) {
            First::Held(cell) => Ok(Hold::new(cell)),
            First::MustWait(owners) => wait_and_reserve(py, owners, knobs, self.max_wait),
            First::Failed(e) => Err(e),
        }
    }

    /// `reserve` for asyncio: returns an awaitable (also an async context manager) that
    /// gives the `Hold`. Never blocks the event loop: a dry lane's bounded wait runs on
    /// the loop's default executor.
    #[pyo3(signature = (model=None, *, input_tokens=0, max_output_tokens=None, cost=None,
        tier="interactive", initiator="human", tenant=None, task=None, agent=None, feature=None,
        outcomes=0))]
    #[allow(clippy::too_many_arguments)]
    fn reserve_async<'py>(
        &self,
        py: Python<'py>,
        model: Option<&Bound<'py, PyAny>>,
        input_tokens: u64,
        max_output_tokens: Option<u64>,
        cost: Option<u64>,
        tier: &str,
        initiator: &str,
        tenant: Option<&Bound<'py, PyAny>>,
        task: Option<&Bound<'py, Task>>,
        agent: Option<&Bound<'py, PyAny>>,
        feature: Option<&Bound<'py, PyAny>>,
        outcomes: u32,
    ) -> PyResult<Bound<'py, PyAny>> {
        let reserving = RESERVING.import(py, "tollgate._aio", "Reserving")?;
        let resolved = self.resolve(
            py,
            model,
            input_tokens,
            max_output_tokens,
            cost,
            tier,
            initiator,
            tenant,
            task,
            agent,
            feature,
        );
        let (owners, knobs) = match resolved {
            Ok((owners, knobs)) => (owners, Knobs { outcomes, ..knobs }),
            Err(e) => return reserving.call_method1("failed", (e.into_value(py),)),
        };
        match first_try(py, owners, &knobs) {
            First::Held(cell) => {
                reserving.call_method1("ready", (Bound::new(py, Hold::new(cell))?,))
            }
            First::MustWait(owners) => {
                let pending = Pending {
                    call: Mutex::new(Some((owners, knobs))),
                    max_wait: self.max_wait,
                };
                reserving.call_method1("pending", (Bound::new(py, pending)?,))
            }
            First::Failed(e) => reserving.call_method1("failed", (e.into_value(py),)),
        }
    }

    /// Lanes the calling thread holds on this gate (diagnostics, tests).
    fn _thread_lanes(&self, py: Python<'_>) -> PyResult<usize> {
        Ok(self.core(py)?.gate().thread_lanes())
    }

    fn __repr__(&self) -> String {
        format!("Gate({:?})", self.path.display().to_string())
    }
}

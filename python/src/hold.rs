//! `Hold`: credits held for one call, settled exactly once.
//!
//! **Invariant.** A hold's reservation is settled once: by `commit`, `commit_credits`,
//! `cancel`, the context manager's exit, or (if none ran) the cancel of its drop; and only
//! in the process that made it (in a fork child it is leaked, see [`crate::fork`]).
//!
//! A client `Reservation` borrows the gate, the model and the task it was made with;
//! a Python object cannot carry a borrow, so the hold owns them (`Owners`, a few `Arc`s)
//! and the reservation that borrows them, side by side in one `self_cell` (no unsafe
//! code here).

use std::sync::Arc;

use pyo3::prelude::*;
use pyo3::types::PyAny;
use self_cell::self_cell;
use tollgate_client::{AgentName, Call, Feature, Reservation, ReserveError, TenantId};
use tollgate_core::{Credits, Initiator, Tier, Usage};

use crate::attachment::Core;
use crate::errors;
use crate::fork;
use crate::handles::TaskShared;

/// What a reservation borrows, owned.
pub struct Owners {
    pub(crate) core: Arc<Core>,
    pub(crate) model: Option<Arc<tollgate_client::Model>>,
    pub(crate) task: Option<Arc<TaskShared>>,
}

/// The rest of a call: plain values.
#[derive(Clone, Copy)]
pub struct Knobs {
    /// The cost of a pre-rated call (no model), in micro-credits.
    pub(crate) cost: u64,
    pub(crate) tenant: TenantId,
    pub(crate) tier: Tier,
    pub(crate) initiator: Initiator,
    pub(crate) input_tokens: u64,
    pub(crate) max_output_tokens: Option<u64>,
    pub(crate) agent: Option<AgentName>,
    pub(crate) feature: Option<Feature>,
    /// Outcomes the call may produce (its reservation covers them).
    pub(crate) outcomes: u32,
}

impl Knobs {
    /// The client call for `o`, waiting for a top-up or not.
    pub(crate) fn call<'a>(&self, o: &'a Owners, wait: bool) -> Call<'a> {
        let call = match &o.model {
            Some(m) => Call::model(m),
            None => Call::fixed(Credits(self.cost)),
        }
        .tenant(self.tenant)
        .tier(self.tier)
        .initiator(self.initiator)
        .input_tokens(self.input_tokens)
        .outcomes(self.outcomes)
        .wait(wait);
        let call = match self.max_output_tokens {
            Some(n) => call.max_output_tokens(n),
            None => call,
        };
        let call = match self.agent {
            Some(a) => call.agent(a),
            None => call,
        };
        let call = match self.feature {
            Some(f) => call.feature(f),
            None => call,
        };
        match &o.task {
            Some(t) => call.task(&t.task),
            None => call,
        }
    }
}

type Slot<'a> = Option<Reservation<'a>>;

self_cell!(
    /// A reservation with what it borrows.
    pub struct HoldCell {
        owner: Owners,
        #[covariant]
        dependent: Slot,
    }
);

/// Reserves for the call; on failure the owners come back (for a retry or the error).
pub fn reserve(
    owners: Owners,
    knobs: &Knobs,
    wait: bool,
) -> Result<HoldCell, (Owners, ReserveError)> {
    HoldCell::try_new_or_recover(owners, |o| {
        o.core.gate().reserve(&knobs.call(o, wait)).map(Some)
    })
}

/// How a hold ends.
enum Settle {
    Usage(Usage, u32),
    Credits(u64),
    Cancel,
}

/// Credits held for one LLM call (see `Gate.reserve`). Commit it with the usage the
/// provider reported, or cancel it; as a context manager it is cancelled when the block
/// is left without a commit (an exception included), and a hold that is garbage-collected
/// unsettled is cancelled too: it never leaks.
#[pyclass(module = "tollgate._native")]
pub struct Hold {
    cell: Option<HoldCell>,
    generation: u64,
    amount: u64,
    charged: Option<u64>,
}

impl Hold {
    pub(crate) fn new(cell: HoldCell) -> Hold {
        let amount = cell.borrow_dependent().as_ref().map_or(0, |r| r.amount().0);
        Hold {
            cell: Some(cell),
            generation: fork::generation(),
            amount,
            charged: None,
        }
    }

    fn forked(&self) -> bool {
        self.generation != fork::generation()
    }

    /// Settles the reservation; the charge in micro-credits.
    fn settle(&mut self, py: Python<'_>, how: Settle) -> PyResult<u64> {
        if self.forked() {
            return Err(errors::hold_closed(py, "forked"));
        }
        let Some(mut cell) = self.cell.take() else {
            return Err(errors::hold_closed(py, "closed"));
        };
        let amount = self.amount;
        let cancel = matches!(how, Settle::Cancel);
        let done = cell.with_dependent_mut(|_, slot| {
            slot.take().map(|r| match how {
                Settle::Usage(u, 0) => r.commit(u),
                Settle::Usage(u, outcomes) => r.commit_with_outcomes(u, outcomes),
                Settle::Credits(c) => r.commit_credits(Credits(c)),
                Settle::Cancel => {
                    r.cancel();
                    Ok(Credits::ZERO)
                }
            })
        });
        match done {
            Some(Ok(c)) => {
                if !cancel {
                    self.charged = Some(c.0);
                }
                Ok(c.0)
            }
            Some(Err(e)) => {
                if matches!(e, tollgate_client::CommitError::Rating(_)) {
                    self.charged = Some(amount);
                }
                Err(errors::commit(py, &e, amount))
            }
            None => Err(errors::hold_closed(py, "closed")),
        }
    }
}

impl Drop for Hold {
    fn drop(&mut self) {
        if let Some(cell) = self.cell.take()
            && self.forked()
        {
            // The parent's reservation: the parent settles it, the child never does.
            std::mem::forget(cell);
        }
        // Otherwise the cell was dropped above: an unsettled reservation cancels on drop.
    }
}

#[pymethods]
impl Hold {
    /// Credits held, in micro-credits.
    #[getter]
    fn amount(&self) -> u64 {
        self.amount
    }

    /// `True` until the hold is committed or cancelled.
    #[getter]
    fn open(&self) -> bool {
        self.cell.is_some() && !self.forked()
    }

    /// What the commit charged, in micro-credits; `None` while open or after a cancel.
    #[getter]
    fn charged(&self) -> Option<u64> {
        self.charged
    }

    /// Commits the call's actual usage (and the `outcomes` it produced, e.g. a resolved
    /// ticket), rated by the price book: the rest of the hold goes back (a call that cost
    /// more than it held is charged the overrun). Returns the charge in micro-credits.
    /// Raises `CommitError` (`rating`: the full hold was charged; `reclaimed`: nothing
    /// was) or `HoldClosed`.
    #[pyo3(signature = (input_tokens=0, output_tokens=0, outcomes=0))]
    fn commit(
        &mut self,
        py: Python<'_>,
        input_tokens: u64,
        output_tokens: u64,
        outcomes: u32,
    ) -> PyResult<u64> {
        self.settle(
            py,
            Settle::Usage(
                Usage {
                    input_tokens,
                    output_tokens,
                },
                outcomes,
            ),
        )
    }

    /// Commits an actual cost already rated, in micro-credits (a pre-rated call).
    fn commit_credits(&mut self, py: Python<'_>, micro_credits: u64) -> PyResult<u64> {
        self.settle(py, Settle::Credits(micro_credits))
    }

    /// Cancels: everything held goes back. Does nothing on a settled hold (or in a fork
    /// child, where the hold is the parent's).
    fn cancel(&mut self, py: Python<'_>) -> PyResult<()> {
        if self.cell.is_none() || self.forked() {
            return Ok(());
        }
        self.settle(py, Settle::Cancel).map(|_| ())
    }

    fn __enter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    /// Cancels the hold if the block did not settle it (an exception, or no commit).
    fn __exit__(
        &mut self,
        py: Python<'_>,
        _exc_type: Option<&Bound<'_, PyAny>>,
        _exc: Option<&Bound<'_, PyAny>>,
        _tb: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<bool> {
        self.cancel(py)?;
        Ok(false)
    }

    fn __repr__(&self) -> String {
        let state = if self.forked() {
            "forked".to_owned()
        } else if self.cell.is_some() {
            "open".to_owned()
        } else {
            match self.charged {
                Some(c) => format!("charged={c}"),
                None => "cancelled".to_owned(),
            }
        };
        format!("Hold(amount={}, {state})", self.amount)
    }
}

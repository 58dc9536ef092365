//! A region's balance, read by its owner (for tests and diagnostics, with the sidecar
//! stopped: opening a region as its owner finishes the sidecar's journal).

use pyo3::exceptions::PyOSError;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};

/// The region's conservation check and pool totals: a dict with `balanced` (bool),
/// `error` (the first equation that does not hold, or None), `pools` (a dict per pool:
/// granted, available, carved, consumed, returned, overrun, reclaimed) and `held` (credits
/// still held by reservations in lanes). Micro-credits. Only with the sidecar stopped.
#[pyfunction]
pub fn _region_audit<'py>(
    py: Python<'py>,
    path: std::path::PathBuf,
) -> PyResult<Bound<'py, PyDict>> {
    let region = tollgate_client::Region::open_owner(&path)
        .map_err(|e| PyOSError::new_err(format!("{}: {e}", path.display())))?;
    let audit = region.audit();
    let out = PyDict::new(py);
    let check = audit.check();
    out.set_item("balanced", check.is_ok())?;
    out.set_item("error", check.err())?;
    let pools = PyList::empty(py);
    for p in &audit.pools {
        let d = PyDict::new(py);
        d.set_item("pool", p.pool)?;
        d.set_item("granted", p.granted)?;
        d.set_item("available", p.available)?;
        d.set_item("carved", p.carved)?;
        d.set_item("consumed", p.consumed)?;
        d.set_item("returned", p.returned)?;
        d.set_item("overrun", p.overrun)?;
        d.set_item("reclaimed", p.reclaimed)?;
        pools.append(d)?;
    }
    out.set_item("pools", pools)?;
    out.set_item("held", audit.lanes.iter().map(|l| l.held).sum::<u64>())?;
    Ok(out)
}

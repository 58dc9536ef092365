//! Process identity: pid plus start time (clock ticks since boot, from `/proc`), so a
//! recycled pid is never mistaken for the process that claimed a lane.

/// A process as lanes record it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ProcessId {
    /// Operating-system process id.
    pub pid: u32,
    /// Start time in clock ticks since boot (`/proc/<pid>/stat` field 22).
    pub start_ticks: u64,
}

const PID_BITS: u32 = 22; // Linux PID_MAX_LIMIT is 2^22
const START_BITS: u32 = 41;

impl ProcessId {
    /// This process.
    pub fn current() -> std::io::Result<ProcessId> {
        let pid = std::process::id();
        let start_ticks = start_ticks(pid)?.ok_or_else(|| {
            std::io::Error::new(std::io::ErrorKind::NotFound, "own /proc/<pid>/stat missing")
        })?;
        Ok(ProcessId { pid, start_ticks })
    }

    /// Whether this exact process (same pid, same start time) is still running.
    /// A zombie counts as dead: it runs no code and will not touch the region again.
    pub fn is_alive(&self) -> bool {
        match stat_fields(self.pid) {
            Ok(Some((state, start))) => state != 'Z' && state != 'X' && start == self.start_ticks,
            // Not there (or unreadable): gone.
            _ => false,
        }
    }

    /// The lane claim word: `[pid:22 | start:41 | owned:1]`.
    pub(crate) fn claim_word(&self) -> u64 {
        let pid = u64::from(self.pid) & ((1 << PID_BITS) - 1);
        let start = self.start_ticks & ((1 << START_BITS) - 1);
        (((pid << START_BITS) | start) << 1) | 1
    }

    /// The process a claim word names (owned or being reclaimed); `None` for a free lane.
    pub(crate) fn from_claim(w: u64) -> Option<ProcessId> {
        if w == 0 {
            return None;
        }
        let id = w >> 1;
        Some(ProcessId {
            pid: (id >> START_BITS) as u32,
            start_ticks: id & ((1 << START_BITS) - 1),
        })
    }
}

fn start_ticks(pid: u32) -> std::io::Result<Option<u64>> {
    Ok(stat_fields(pid)?.map(|(_, s)| s))
}

/// `(state, starttime)` from `/proc/<pid>/stat`; `None` if there is no such process.
fn stat_fields(pid: u32) -> std::io::Result<Option<(char, u64)>> {
    let text = match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    // The command name (field 2) may contain spaces and parentheses: split after the
    // last ')'. Then field 3 is the state and field 22 the start time.
    let rest = text.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let mut it = rest.split_whitespace();
    let state = it.next().and_then(|s| s.chars().next());
    let start = it.nth(18).and_then(|s| s.parse::<u64>().ok());
    match (state, start) {
        (Some(st), Some(s)) => Ok(Some((st, s & ((1 << START_BITS) - 1)))),
        _ => Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("cannot parse /proc/{pid}/stat"),
        )),
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn own_identity_is_alive_and_round_trips_through_a_claim_word() {
        let me = ProcessId::current().unwrap();
        assert!(me.is_alive());
        assert_eq!(ProcessId::from_claim(me.claim_word()), Some(me));
        let other = ProcessId {
            start_ticks: me.start_ticks + 1,
            ..me
        };
        assert!(
            !other.is_alive(),
            "same pid, other start time: a recycled pid"
        );
        assert_eq!(ProcessId::from_claim(0), None);
    }
}

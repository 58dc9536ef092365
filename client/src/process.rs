//! The sidecar's own identity as the region header records it (pid plus start time, for
//! people and for a restarted sidecar's log). Liveness of agents does not use pids: see
//! [`crate::holder`], since a pid means nothing outside its PID namespace.

/// A process as the region header records its owner.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ProcessId {
    /// Operating-system process id, in the owner's own PID namespace.
    pub pid: u32,
    /// Start time in clock ticks since boot (`/proc/self/stat` field 22).
    pub start_ticks: u64,
}

impl ProcessId {
    /// This process (read from `/proc/self`, which names the caller in any namespace).
    pub fn current() -> std::io::Result<ProcessId> {
        let text = std::fs::read_to_string("/proc/self/stat")?;
        let start_ticks = start_time(&text).ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "cannot parse /proc/self/stat",
            )
        })?;
        Ok(ProcessId {
            pid: std::process::id(),
            start_ticks,
        })
    }
}

/// Field 22 of a `/proc/<pid>/stat` line. The command name (field 2) may contain spaces and
/// parentheses: split after the last ')', then the start time is the 20th field.
fn start_time(stat: &str) -> Option<u64> {
    let rest = stat.rsplit_once(')').map(|(_, r)| r)?;
    rest.split_whitespace().nth(19)?.parse().ok()
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn own_identity_is_read_and_the_stat_line_parsed() {
        let me = ProcessId::current().unwrap();
        assert_eq!(me.pid, std::process::id());
        assert!(me.start_ticks > 0);
        let line = "42 (a (weird) name) S 1 42 42 0 -1 4194560 1 0 0 0 0 0 0 0 20 0 1 0 98765 0 0";
        assert_eq!(start_time(line), Some(98765));
        assert_eq!(start_time("garbage"), None);
    }
}

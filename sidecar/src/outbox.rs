//! The outbox: signed usage batches persisted in the sidecar's state folder (`--state-dir`, by default the region's folder) before they are
//! sent, removed only when the authority acknowledges them.
//!
//! # Invariant
//!
//! A usage record leaves a ring only after the batch holding it is in the outbox, and a batch
//! leaves the outbox only after the authority acknowledged it as durable. Batches carry a
//! sequence number that is never reused by this sidecar identity (the authority posts a batch
//! once per (sidecar, sequence)), so replaying after a restart or a reconnect can double
//! nothing.
//!
//! # Layout and crash safety
//!
//! One file per batch, `<seq:020>.batch`, written to a temporary name and renamed into
//! place, so a crash leaves either the whole batch or none of it. `next_seq` is a small file
//! updated after each batch is written. Each batch file holds a magic, its sequence, the
//! payload length, the payload and a CRC-32.
//!
//! # Sequences are never reused
//!
//! Every sequence handed out is covered on disk, by the `next_seq` file or by a batch file
//! that is still there:
//!
//! - [`Outbox::persist`] writes the batch, then `next_seq`, and only then advances the
//!   in-memory sequence and reports success. If the `next_seq` write fails, it removes the
//!   batch file again and returns the error: the caller keeps its records and the next
//!   attempt carries the same sequence, which no one has seen. (If even that removal fails,
//!   the leftover file holds a complete, consistent batch; the next attempt replaces it, and
//!   a restart before that replays it once.)
//! - [`Outbox::open`] resumes from the larger of `next_seq` and one past the highest batch
//!   file (a crash between the two writes), and writes that back to `next_seq`.
//! - While `next_seq` may be behind (that write-back failed), [`Outbox::ack`] writes it
//!   before it removes a batch at or past it, so the batch file, the last evidence of its
//!   sequence, never goes before `next_seq` covers it.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

const MAGIC: &[u8; 8] = b"TGOUTBX1";
const HEADER: usize = 8 + 8 + 4;
const SUFFIX: &str = ".batch";

/// What went wrong with the outbox.
#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    /// A file operation failed (a full or read-only tmpfs, a missing folder, permissions).
    #[error(
        "outbox {path}: {source} (check that the region folder exists, is writable and has room)"
    )]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> OutboxError + '_ {
    move |source| OutboxError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// One persisted, not yet acknowledged batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pending {
    /// The batch's sequence number.
    pub seq: u64,
    /// The encoded, signed batch exactly as it is sent.
    pub payload: Vec<u8>,
}

/// What `open` found.
#[derive(Debug, Default)]
pub struct Recovered {
    /// Batches to resend, in sequence order.
    pub pending: Vec<Pending>,
    /// Files that failed their checks, renamed to `*.corrupt` and kept for inspection.
    pub corrupt: Vec<PathBuf>,
}

/// The outbox folder.
#[derive(Debug)]
pub struct Outbox {
    dir: PathBuf,
    /// The sequence the next batch carries.
    next_seq: u64,
    /// What the `next_seq` file holds, as far as this process knows (a lower bound).
    stored_next_seq: u64,
}

fn encode(seq: u64, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER + payload.len() + 4);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(payload);
    out.extend_from_slice(&crc32fast::hash(&out).to_le_bytes());
    out
}

fn decode(bytes: &[u8]) -> Option<(u64, Vec<u8>)> {
    if bytes.len() < HEADER + 4 || &bytes[..8] != MAGIC {
        return None;
    }
    let seq = u64::from_le_bytes(bytes[8..16].try_into().ok()?);
    let len = u32::from_le_bytes(bytes[16..20].try_into().ok()?) as usize;
    if bytes.len() != HEADER + len + 4 {
        return None;
    }
    let body = &bytes[..HEADER + len];
    let crc = u32::from_le_bytes(bytes[HEADER + len..].try_into().ok()?);
    (crc32fast::hash(body) == crc).then(|| (seq, bytes[HEADER..HEADER + len].to_vec()))
}

fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), OutboxError> {
    let tmp = path.with_extension("tmp");
    let mut f = fs::File::create(&tmp).map_err(io(&tmp))?;
    f.write_all(bytes).map_err(io(&tmp))?;
    // On tmpfs this is cheap; on a disk it makes the rename below mean "durable".
    f.sync_all().map_err(io(&tmp))?;
    fs::rename(&tmp, path).map_err(io(path))
}

impl Outbox {
    /// Opens (creating if needed) the outbox in `dir` and returns what is left to send.
    pub fn open(dir: impl Into<PathBuf>) -> Result<(Self, Recovered), OutboxError> {
        let dir = dir.into();
        fs::create_dir_all(&dir).map_err(io(&dir))?;
        let mut rec = Recovered::default();
        let mut max_seen: Option<u64> = None;
        for entry in fs::read_dir(&dir).map_err(io(&dir))? {
            let path = entry.map_err(io(&dir))?.path();
            let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
                continue;
            };
            if name.ends_with(".tmp") {
                // an interrupted write: its records are still in the rings
                let _ = fs::remove_file(&path);
                continue;
            }
            let Some(stem) = name.strip_suffix(SUFFIX) else {
                continue;
            };
            let bytes = fs::read(&path).map_err(io(&path))?;
            match (stem.parse::<u64>().ok(), decode(&bytes)) {
                (Some(n), Some((seq, payload))) if n == seq => {
                    max_seen = Some(max_seen.map_or(seq, |m| m.max(seq)));
                    rec.pending.push(Pending { seq, payload });
                }
                _ => {
                    let bad = path.with_extension("corrupt");
                    fs::rename(&path, &bad).map_err(io(&path))?;
                    if let Ok(n) = stem.parse::<u64>() {
                        max_seen = Some(max_seen.map_or(n, |m| m.max(n)));
                    }
                    rec.corrupt.push(bad);
                }
            }
        }
        rec.pending.sort_by_key(|p| p.seq);
        let seq_path = dir.join("next_seq");
        let stored = match fs::read_to_string(&seq_path) {
            Ok(s) => s.trim().parse::<u64>().unwrap_or(0),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
            Err(e) => return Err(io(&seq_path)(e)),
        };
        let next_seq = stored
            .max(max_seen.map_or(0, |m| m.saturating_add(1)))
            .max(1);
        let mut ob = Self {
            dir,
            next_seq,
            stored_next_seq: stored,
        };
        if next_seq > stored {
            // Best effort: if this fails, `ack` writes it before removing the batch files
            // that are the evidence of the higher sequences.
            let _ = ob.store_next_seq();
        }
        Ok((ob, rec))
    }

    fn store_next_seq(&mut self) -> Result<(), OutboxError> {
        write_atomically(&self.seq_path(), self.next_seq.to_string().as_bytes())?;
        self.stored_next_seq = self.next_seq;
        Ok(())
    }

    fn seq_path(&self) -> PathBuf {
        self.dir.join("next_seq")
    }

    /// The sequence number the next batch must carry.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Persists the batch numbered [`Outbox::next_seq`] and advances the sequence, both or
    /// neither: on an error the batch is not in the outbox (its file is removed again) and
    /// [`Outbox::next_seq`] is unchanged, so the caller keeps its records and retries them
    /// under the same sequence.
    pub fn persist(&mut self, payload: &[u8]) -> Result<u64, OutboxError> {
        let seq = self.next_seq;
        let after = seq.checked_add(1).ok_or_else(|| OutboxError::Io {
            path: self.seq_path(),
            source: std::io::Error::other("batch sequence exhausted"),
        })?;
        let path = self.batch_path(seq);
        write_atomically(&path, &encode(seq, payload))?;
        let seq_file = write_atomically(&self.seq_path(), after.to_string().as_bytes());
        if let Err(e) = seq_file {
            // Take the batch back: the caller is told it is not persisted and will not send
            // it. If the removal fails too, the file is a complete batch under a sequence
            // nobody has seen; the retry replaces it (or a restart replays it once).
            let _ = fs::remove_file(&path);
            return Err(e);
        }
        self.next_seq = after;
        self.stored_next_seq = after;
        Ok(seq)
    }

    /// Drops an acknowledged batch. Acknowledging a batch that is not there is not an error
    /// (a duplicate acknowledgement after a replay). If the `next_seq` file may be behind
    /// this batch, it is written first; should that fail, the batch stays (a restart replays
    /// it and the authority answers "duplicate") rather than its sequence being forgotten.
    pub fn ack(&mut self, seq: u64) -> Result<(), OutboxError> {
        if seq >= self.stored_next_seq {
            self.store_next_seq()?;
        }
        let path = self.batch_path(seq);
        match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io(&path)(e)),
        }
    }

    /// The payload of pending batch `seq`, if it is still in the outbox and intact.
    pub fn read(&self, seq: u64) -> Result<Option<Vec<u8>>, OutboxError> {
        let path = self.batch_path(seq);
        match fs::read(&path) {
            Ok(bytes) => Ok(decode(&bytes).filter(|(s, _)| *s == seq).map(|(_, p)| p)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io(&path)(e)),
        }
    }

    /// Number of batches waiting for an acknowledgement.
    pub fn pending_count(&self) -> Result<usize, OutboxError> {
        let mut n = 0;
        for entry in fs::read_dir(&self.dir).map_err(io(&self.dir))? {
            let entry = entry.map_err(io(&self.dir))?;
            if entry
                .file_name()
                .to_str()
                .is_some_and(|s| s.ends_with(SUFFIX))
            {
                n += 1;
            }
        }
        Ok(n)
    }

    fn batch_path(&self, seq: u64) -> PathBuf {
        self.dir.join(format!("{seq:020}{SUFFIX}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn persist_ack_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let (mut ob, rec) = Outbox::open(dir.path()).unwrap();
        assert!(rec.pending.is_empty());
        assert_eq!(ob.next_seq(), 1);
        assert_eq!(ob.persist(b"one").unwrap(), 1);
        assert_eq!(ob.persist(b"two").unwrap(), 2);
        assert_eq!(ob.persist(b"three").unwrap(), 3);
        ob.ack(2).unwrap();
        ob.ack(2).unwrap(); // duplicate ack is harmless
        drop(ob);
        let (ob, rec) = Outbox::open(dir.path()).unwrap();
        let seqs: Vec<u64> = rec.pending.iter().map(|p| p.seq).collect();
        assert_eq!(seqs, vec![1, 3]);
        assert_eq!(ob.read(3).unwrap().as_deref(), Some(&b"three"[..]));
        assert_eq!(ob.read(2).unwrap(), None);
        assert_eq!(rec.pending[1].payload, b"three");
        assert_eq!(ob.next_seq(), 4);
    }

    #[test]
    fn sequence_never_reused_after_all_acked() {
        let dir = tempfile::tempdir().unwrap();
        let (mut ob, _) = Outbox::open(dir.path()).unwrap();
        for _ in 0..5 {
            let s = ob.persist(b"x").unwrap();
            ob.ack(s).unwrap();
        }
        drop(ob);
        let (ob, rec) = Outbox::open(dir.path()).unwrap();
        assert!(rec.pending.is_empty());
        assert_eq!(ob.next_seq(), 6);
    }

    #[test]
    fn crash_between_batch_and_seq_file_reuses_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let (mut ob, _) = Outbox::open(dir.path()).unwrap();
        ob.persist(b"a").unwrap();
        // simulate: batch 2 written, next_seq still says 2
        write_atomically(
            &dir.path().join(format!("{:020}.batch", 2)),
            &encode(2, b"b"),
        )
        .unwrap();
        drop(ob);
        let (ob, rec) = Outbox::open(dir.path()).unwrap();
        assert_eq!(rec.pending.len(), 2);
        assert_eq!(ob.next_seq(), 3);
    }

    /// Makes every write of the `next_seq` file fail (its temporary name is a folder), while
    /// batch files still write: the failure that used to leave a batch behind whose sequence
    /// the sidecar had already moved past.
    fn block_seq_file(dir: &Path) {
        fs::create_dir(dir.join("next_seq.tmp")).unwrap();
    }

    fn unblock_seq_file(dir: &Path) {
        fs::remove_dir(dir.join("next_seq.tmp")).unwrap();
    }

    /// The authority's rule: a batch is posted once per sequence; a sequence it has seen is a
    /// duplicate and its payload is dropped.
    #[derive(Default)]
    struct Authority {
        posted: std::collections::BTreeMap<u64, Vec<u8>>,
    }

    impl Authority {
        /// Returns whether the batch was new.
        fn post(&mut self, seq: u64, payload: &[u8]) -> bool {
            if self.posted.contains_key(&seq) {
                return false;
            }
            self.posted.insert(seq, payload.to_vec());
            true
        }

        /// Every record posted, in sequence order (a payload is comma-separated records).
        fn records(&self) -> Vec<String> {
            self.posted
                .values()
                .flat_map(|p| std::str::from_utf8(p).unwrap().split(','))
                .map(str::to_string)
                .collect()
        }
    }

    #[test]
    fn failed_next_seq_write_takes_the_batch_back_and_nothing_is_posted_twice() {
        let dir = tempfile::tempdir().unwrap();
        let mut auth = Authority::default();
        let (mut ob, _) = Outbox::open(dir.path()).unwrap();
        let s = ob.persist(b"r1").unwrap();
        assert!(auth.post(s, b"r1"));
        ob.ack(s).unwrap();

        // The batch file writes, the next_seq file does not.
        block_seq_file(dir.path());
        assert!(ob.persist(b"r2,r3").is_err());
        assert_eq!(ob.next_seq(), 2, "the sequence did not advance");
        assert!(!ob.batch_path(2).exists(), "the batch was taken back");
        assert_eq!(ob.pending_count().unwrap(), 0);
        unblock_seq_file(dir.path());

        // The caller kept r2 and r3 (the persist failed) and retries them with r4.
        let s = ob.persist(b"r2,r3,r4").unwrap();
        assert_eq!(s, 2, "the retry carries the sequence nobody has seen");
        assert!(auth.post(s, b"r2,r3,r4"));
        ob.ack(s).unwrap();
        let s = ob.persist(b"r5").unwrap();
        assert_eq!(s, 3);

        // Restart: whatever is in the outbox is replayed.
        drop(ob);
        let (mut ob, rec) = Outbox::open(dir.path()).unwrap();
        let seqs: Vec<u64> = rec.pending.iter().map(|p| p.seq).collect();
        assert_eq!(seqs, vec![3]);
        for p in &rec.pending {
            auth.post(p.seq, &p.payload);
            ob.ack(p.seq).unwrap();
        }
        let s = ob.persist(b"r6").unwrap();
        assert_eq!(s, 4);
        assert!(auth.post(s, b"r6"), "sequence {s} was already used");
        assert_eq!(auth.records(), ["r1", "r2", "r3", "r4", "r5", "r6"]);
    }

    #[test]
    fn a_sequence_known_only_from_a_batch_file_survives_that_file_being_acked() {
        let dir = tempfile::tempdir().unwrap();
        let mut auth = Authority::default();
        let (mut ob, _) = Outbox::open(dir.path()).unwrap();
        let s = ob.persist(b"r1").unwrap();
        assert!(auth.post(s, b"r1"));
        drop(ob);
        // A crash between the two writes, twice: batches 2 and 3 on disk, next_seq says 2.
        for (seq, p) in [(2, &b"r2"[..]), (3, &b"r3"[..])] {
            write_atomically(
                &dir.path().join(format!("{seq:020}.batch")),
                &encode(seq, p),
            )
            .unwrap();
        }
        // And next_seq cannot be written when the sidecar comes back.
        block_seq_file(dir.path());
        let (mut ob, rec) = Outbox::open(dir.path()).unwrap();
        assert_eq!(ob.next_seq(), 4);
        for p in &rec.pending {
            auth.post(p.seq, &p.payload);
        }
        ob.ack(1).unwrap(); // covered by the next_seq file
        assert!(
            ob.ack(2).is_err(),
            "batch 2 is the only evidence of sequences 2 and 3"
        );
        assert!(ob.batch_path(2).exists());
        // Restart while next_seq is still unwritable: nothing forgotten.
        drop(ob);
        let (mut ob, rec) = Outbox::open(dir.path()).unwrap();
        assert_eq!(ob.next_seq(), 4);
        assert_eq!(rec.pending.len(), 2);
        unblock_seq_file(dir.path());
        for p in &rec.pending {
            assert!(!auth.post(p.seq, &p.payload), "a replay is a duplicate");
            ob.ack(p.seq).unwrap();
        }
        // Every batch file is gone; a restart still resumes past 3.
        drop(ob);
        let (mut ob, rec) = Outbox::open(dir.path()).unwrap();
        assert!(rec.pending.is_empty());
        assert_eq!(ob.next_seq(), 4);
        let s = ob.persist(b"r4").unwrap();
        assert!(
            auth.post(s, b"r4"),
            "sequence {s} was already used: r4 would be lost"
        );
        assert_eq!(auth.records(), ["r1", "r2", "r3", "r4"]);
    }

    #[test]
    fn open_writes_back_the_sequence_it_derived_from_batch_files() {
        let dir = tempfile::tempdir().unwrap();
        write_atomically(
            &dir.path().join(format!("{:020}.batch", 7)),
            &encode(7, b"x"),
        )
        .unwrap();
        let (mut ob, _) = Outbox::open(dir.path()).unwrap();
        assert_eq!(ob.next_seq(), 8);
        assert_eq!(
            fs::read_to_string(dir.path().join("next_seq")).unwrap(),
            "8"
        );
        ob.ack(7).unwrap();
        drop(ob);
        let (ob, _) = Outbox::open(dir.path()).unwrap();
        assert_eq!(ob.next_seq(), 8);
    }

    #[test]
    fn a_batch_file_at_the_last_sequence_does_not_overflow() {
        let dir = tempfile::tempdir().unwrap();
        let seq = u64::MAX;
        write_atomically(
            &dir.path().join(format!("{seq:020}.batch")),
            &encode(seq, b"x"),
        )
        .unwrap();
        let (mut ob, rec) = Outbox::open(dir.path()).unwrap();
        assert_eq!(rec.pending.len(), 1);
        assert_eq!(ob.next_seq(), u64::MAX);
        assert!(ob.persist(b"y").is_err(), "no sequence left");
        assert_eq!(ob.read(seq).unwrap().as_deref(), Some(&b"x"[..]));
    }

    #[test]
    fn corrupt_and_torn_files_are_set_aside() {
        let dir = tempfile::tempdir().unwrap();
        let (mut ob, _) = Outbox::open(dir.path()).unwrap();
        ob.persist(b"good").unwrap();
        let seq = ob.persist(b"will be flipped").unwrap();
        drop(ob);
        let p = dir.path().join(format!("{seq:020}.batch"));
        let mut bytes = fs::read(&p).unwrap();
        let last = bytes.len() - 6;
        bytes[last] ^= 0xff;
        fs::write(&p, bytes).unwrap();
        fs::write(dir.path().join("x.tmp"), b"torn").unwrap();
        let (ob, rec) = Outbox::open(dir.path()).unwrap();
        assert_eq!(rec.pending.len(), 1);
        assert_eq!(rec.corrupt.len(), 1);
        assert!(!dir.path().join("x.tmp").exists());
        assert_eq!(ob.next_seq(), seq + 1);
    }

    #[test]
    fn decode_rejects_garbage_without_panicking() {
        for len in 0..40 {
            let junk: Vec<u8> = (0..len).map(|i| (i * 37) as u8).collect();
            assert!(decode(&junk).is_none());
        }
        let mut ok = encode(7, b"payload");
        assert_eq!(decode(&ok), Some((7, b"payload".to_vec())));
        ok.truncate(ok.len() - 1);
        assert!(decode(&ok).is_none());
    }
}

//! The price book in the region: a versioned blob under a seqlock.
//!
//! The sidecar (single writer) makes the sequence word odd, writes the length and the
//! bytes (eight per word, each store Release), then makes it even again (Release).
//! A reader loads the sequence (Acquire), gives up if odd, reads length and words with
//! Acquire loads, and accepts the copy only if the sequence is unchanged. If any word it
//! read came from a newer write, that write's odd sequence store happened before it, so
//! the final check sees a different sequence: no torn copy is ever accepted. Agents poll
//! the sequence word (one load of a read-mostly line) and reload when it changes.

use crate::lane::View;
use crate::layout::{H_BOOK_LEN, H_BOOK_SEQ, H_BOOK_VERSION, WORD};
use crate::sync::{ACQ, REL, RELAXED};

impl View<'_> {
    /// The current sequence (even when stable); agents compare it with what they cached.
    #[inline]
    pub(crate) fn book_seq(&self) -> u64 {
        self.w[H_BOOK_SEQ].load(ACQ)
    }

    /// Writes a new blob (sidecar only). `false` if it does not fit the region.
    pub(crate) fn publish_blob(&self, version: u64, bytes: &[u8]) -> bool {
        if bytes.len() > self.l.book_words * WORD {
            return false;
        }
        let seq = self.w[H_BOOK_SEQ].load(RELAXED);
        let seq = seq | 1; // odd: a write is in progress (also repairs an odd leftover)
        self.w[H_BOOK_SEQ].store(seq, RELAXED);
        self.w[H_BOOK_LEN].store(bytes.len() as u64, REL);
        self.w[H_BOOK_VERSION].store(version, REL);
        for (i, chunk) in bytes.chunks(WORD).enumerate() {
            let mut b = [0u8; WORD];
            b[..chunk.len()].copy_from_slice(chunk);
            self.w[self.l.book_off + i].store(u64::from_le_bytes(b), REL);
        }
        self.w[H_BOOK_SEQ].store(seq.wrapping_add(1), REL);
        true
    }

    /// A consistent copy of the blob: `(seq, version, bytes)`, or `None` if a write is in
    /// progress, nothing was ever published, or the length is out of range.
    pub(crate) fn read_blob(&self) -> Option<(u64, u64, Vec<u8>)> {
        let s1 = self.w[H_BOOK_SEQ].load(ACQ);
        if s1 & 1 == 1 || s1 == 0 {
            return None;
        }
        let len = self.w[H_BOOK_LEN].load(ACQ) as usize;
        let version = self.w[H_BOOK_VERSION].load(ACQ);
        if len > self.l.book_words * WORD {
            return None;
        }
        let mut out = Vec::with_capacity(len);
        for i in 0..len.div_ceil(WORD) {
            let b = self.w[self.l.book_off + i].load(ACQ).to_le_bytes();
            let n = (len - i * WORD).min(WORD);
            out.extend_from_slice(&b[..n]);
        }
        let s2 = self.w[H_BOOK_SEQ].load(ACQ);
        (s1 == s2).then_some((s1, version, out))
    }
}

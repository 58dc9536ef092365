//! What the server was asked and what it reported: the tests' ground truth.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use serde::Serialize;

/// How a request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The whole reply was sent (usage reported).
    Complete,
    /// An error status was answered (no output).
    Failed,
    /// A stream ended with an in-stream error event (usage not reported).
    ErrorEvent,
    /// A stream's connection was cut on purpose (usage not reported).
    Dropped,
    /// A stream went silent on purpose and the client then left.
    Stalled,
    /// The client went away before the end.
    ClientGone,
}

/// One request.
#[derive(Debug, Clone, Serialize)]
pub struct Record {
    /// The response id (`chatcmpl-...`, `resp_...`, `msg_...`, `emb-...`) or `req-N`.
    pub id: String,
    /// Request path.
    pub path: String,
    /// The requested model.
    pub model: Option<String>,
    /// A streamed request.
    pub stream: bool,
    /// The `Authorization` header as received.
    pub authorization: Option<String>,
    /// The `x-api-key` header as received.
    pub x_api_key: Option<String>,
    /// The maximum the request asked for.
    pub max_tokens: Option<u64>,
    /// Input tokens reported (or that would have been).
    pub input_tokens: u64,
    /// Output tokens sent to the client.
    pub output_tokens_sent: u64,
    /// Whether the usage was reported to the client (a complete reply with usage).
    pub usage_reported: bool,
    /// The HTTP status answered.
    pub status: u16,
    /// How it ended.
    pub outcome: Outcome,
}

/// Totals over the journal's lifetime (since the last reset).
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Stats {
    /// Requests answered.
    pub requests: u64,
    /// Input tokens of requests that reported usage.
    pub input_tokens: u64,
    /// Output tokens sent.
    pub output_tokens: u64,
}

/// The bounded journal, shared by the server's tasks.
#[derive(Debug, Clone)]
pub struct Journal {
    inner: Arc<Mutex<Inner>>,
}

#[derive(Debug)]
struct Inner {
    cap: usize,
    records: VecDeque<Record>,
    stats: Stats,
}

impl Journal {
    /// A journal keeping at most `cap` records.
    pub fn new(cap: usize) -> Journal {
        Journal {
            inner: Arc::new(Mutex::new(Inner {
                cap,
                records: VecDeque::new(),
                stats: Stats::default(),
            })),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Appends a record, dropping the oldest past the cap.
    pub fn push(&self, r: Record) {
        let mut g = self.lock();
        g.stats.requests += 1;
        if r.usage_reported {
            g.stats.input_tokens += r.input_tokens;
        }
        g.stats.output_tokens += r.output_tokens_sent;
        if g.cap == 0 {
            return;
        }
        while g.records.len() >= g.cap {
            g.records.pop_front();
        }
        g.records.push_back(r);
    }

    /// The records, oldest first.
    pub fn records(&self) -> Vec<Record> {
        self.lock().records.iter().cloned().collect()
    }

    /// The totals.
    pub fn stats(&self) -> Stats {
        self.lock().stats
    }

    /// Forgets everything.
    pub fn reset(&self) {
        let mut g = self.lock();
        g.records.clear();
        g.stats = Stats::default();
    }
}

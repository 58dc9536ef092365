//! [`BatchBuilder`]: builds a [`UsageBatch`] with an interned string dictionary, so records
//! carry small indexes instead of repeated strings (cheaper to encode, decode and store).

use std::collections::HashMap;

use crate::v1::{Initiator, Tier, UsageBatch, UsageRecord};

/// One call's usage, with its strings, before interning.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecordInput<'a> {
    pub tenant: &'a str,
    /// The agent's name ("" = unnamed).
    pub agent: &'a str,
    /// The instance detail: `<sidecar>/<process>/lane<n>`.
    pub agent_instance: &'a str,
    pub model: &'a str,
    pub feature: &'a str,
    pub task: &'a str,
    pub tier: Option<Tier>,
    pub initiator: Option<Initiator>,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub outcomes: u64,
    pub price_book_version: u64,
    pub client_rated_micro: u64,
    pub calls: u32,
    pub aggregate: bool,
    pub at_unix_ms: u64,
    /// 1 on the record that completes the task named by `task` (an Agentic Work Unit).
    pub work_units: u32,
    /// The agent stated the cost in credits (no usage to re-rate).
    pub pre_rated: bool,
}

/// Accumulates records into one batch; `dictionary[0]` is always "".
#[derive(Debug)]
pub struct BatchBuilder {
    index: HashMap<String, u32>,
    batch: UsageBatch,
}

impl BatchBuilder {
    /// A new, empty batch with sequence number `seq`.
    pub fn new(seq: u64, created_unix_ms: u64) -> Self {
        let mut index = HashMap::new();
        index.insert(String::new(), 0);
        BatchBuilder {
            index,
            batch: UsageBatch {
                seq,
                dictionary: vec![String::new()],
                records: Vec::new(),
                signature: Vec::new(),
                created_unix_ms,
            },
        }
    }

    /// Index of `s` in the dictionary, adding it if new.
    pub fn intern(&mut self, s: &str) -> u32 {
        if let Some(&i) = self.index.get(s) {
            return i;
        }
        let i = self.batch.dictionary.len() as u32;
        self.batch.dictionary.push(s.to_string());
        self.index.insert(s.to_string(), i);
        i
    }

    /// Number of records so far.
    pub fn len(&self) -> usize {
        self.batch.records.len()
    }

    /// True when no record was pushed.
    pub fn is_empty(&self) -> bool {
        self.batch.records.is_empty()
    }

    /// Adds one record.
    pub fn push(&mut self, r: &RecordInput<'_>) {
        let rec = UsageRecord {
            tenant: self.intern(r.tenant),
            agent_instance: self.intern(r.agent_instance),
            model: self.intern(r.model),
            feature: self.intern(r.feature),
            tier: r.tier.unwrap_or(Tier::Unspecified) as i32,
            initiator: r.initiator.unwrap_or(Initiator::Unspecified) as i32,
            input_tokens: r.input_tokens,
            output_tokens: r.output_tokens,
            outcomes: r.outcomes,
            price_book_version: r.price_book_version,
            client_rated_micro: r.client_rated_micro,
            calls: r.calls,
            aggregate: r.aggregate,
            at_unix_ms: r.at_unix_ms,
            task: self.intern(r.task),
            agent: self.intern(r.agent),
            work_units: r.work_units,
            pre_rated: r.pre_rated,
        };
        self.batch.records.push(rec);
    }

    /// The finished (unsigned) batch. Sign it with
    /// [`crate::signing::batch_signing_bytes`] and set `signature`.
    pub fn finish(self) -> UsageBatch {
        self.batch
    }
}

impl UsageBatch {
    /// The dictionary string at `index`, or `None` if out of range.
    pub fn string(&self, index: u32) -> Option<&str> {
        self.dictionary.get(index as usize).map(String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interning_reuses_indexes() {
        let mut b = BatchBuilder::new(7, 1);
        let r = RecordInput {
            tenant: "acme",
            agent_instance: "bot",
            model: "m",
            feature: "chat",
            calls: 1,
            ..Default::default()
        };
        b.push(&r);
        b.push(&r);
        let batch = b.finish();
        assert_eq!(batch.seq, 7);
        assert_eq!(batch.dictionary, vec!["", "acme", "bot", "m", "chat"]);
        assert_eq!(batch.records.len(), 2);
        assert_eq!(batch.string(batch.records[1].tenant), Some("acme"));
        assert_eq!(batch.records[0].task, 0);
        assert_eq!(batch.string(99), None);
    }
}

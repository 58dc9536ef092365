//! Server-sent events, split incrementally from an upstream body: each event is handed
//! on whole (its raw bytes, so it is forwarded unchanged) with its `event:` name and
//! joined `data:` lines.

use bytes::{Bytes, BytesMut};

/// One event as it arrived.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// The raw bytes, blank line included.
    pub raw: Bytes,
    /// The `event:` field ("" if none).
    pub name: String,
    /// The `data:` lines joined with `\n`.
    pub data: String,
}

/// Most bytes one event may take before the stream is treated as broken (an upstream
/// that never sends a blank line must not make the gateway buffer without bound).
pub const MAX_EVENT_BYTES: usize = 4 << 20;

/// Splits a byte stream into events.
#[derive(Debug, Default)]
pub struct Splitter {
    buf: BytesMut,
}

/// The upstream sent an event larger than [`MAX_EVENT_BYTES`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("an upstream event exceeded {MAX_EVENT_BYTES} bytes")]
pub struct TooLarge;

impl Splitter {
    /// Adds `chunk` and returns the events it completed.
    pub fn push(&mut self, chunk: &[u8]) -> Result<Vec<Event>, TooLarge> {
        self.buf.extend_from_slice(chunk);
        let mut out = Vec::new();
        while let Some(end) = boundary(&self.buf) {
            let raw = self.buf.split_to(end).freeze();
            out.push(parse(raw));
        }
        if self.buf.len() > MAX_EVENT_BYTES {
            return Err(TooLarge);
        }
        Ok(out)
    }

    /// Bytes of an event not yet complete.
    pub fn pending(&self) -> usize {
        self.buf.len()
    }
}

/// The end (exclusive) of the first complete event: after `\n\n` or `\r\n\r\n`.
fn boundary(b: &[u8]) -> Option<usize> {
    let mut i = 0;
    while i + 1 < b.len() {
        if b[i] == b'\n' {
            if b[i + 1] == b'\n' {
                return Some(i + 2);
            }
            if b[i + 1] == b'\r' && b.get(i + 2) == Some(&b'\n') {
                return Some(i + 3);
            }
        }
        i += 1;
    }
    None
}

fn parse(raw: Bytes) -> Event {
    let text = String::from_utf8_lossy(&raw);
    let mut name = String::new();
    let mut data: Vec<&str> = Vec::new();
    for line in text.lines() {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if let Some(v) = line.strip_prefix("event:") {
            name = v.trim_start().to_owned();
        } else if let Some(v) = line.strip_prefix("data:") {
            data.push(v.strip_prefix(' ').unwrap_or(v));
        }
    }
    let data = data.join("\n");
    Event { raw, name, data }
}

/// An event named `name` (Anthropic style) with `data`.
pub fn named(name: &str, data: &serde_json::Value) -> Bytes {
    Bytes::from(format!("event: {name}\ndata: {data}\n\n"))
}

/// A data-only event (OpenAI style).
pub fn data(data: &serde_json::Value) -> Bytes {
    Bytes::from(format!("data: {data}\n\n"))
}

/// OpenAI's end of stream.
pub fn done() -> Bytes {
    Bytes::from_static(b"data: [DONE]\n\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_across_chunks() {
        let mut s = Splitter::default();
        assert!(
            s.push(b"event: message_start\ndata: {\"a\"")
                .unwrap()
                .is_empty()
        );
        let ev = s.push(b":1}\n\ndata: [DONE]\r\n\r\ndata: x").unwrap();
        assert_eq!(ev.len(), 2);
        assert_eq!(ev[0].name, "message_start");
        assert_eq!(ev[0].data, "{\"a\":1}");
        assert_eq!(&ev[0].raw[..], b"event: message_start\ndata: {\"a\":1}\n\n");
        assert_eq!((ev[1].name.as_str(), ev[1].data.as_str()), ("", "[DONE]"));
        assert_eq!(s.pending(), 7);
    }

    #[test]
    fn multi_line_data_is_joined() {
        let mut s = Splitter::default();
        let ev = s.push(b"data: a\ndata: b\n\n").unwrap();
        assert_eq!(ev[0].data, "a\nb");
    }
}

//! Server-sent event framing.

use bytes::Bytes;
use serde_json::Value;

/// `event: NAME\ndata: JSON\n\n`.
pub fn event(name: &str, data: &Value) -> Bytes {
    Bytes::from(format!("event: {name}\ndata: {data}\n\n"))
}

/// `data: JSON\n\n` (no event name, as OpenAI's chat streams).
pub fn data(data: &Value) -> Bytes {
    Bytes::from(format!("data: {data}\n\n"))
}

/// OpenAI's end of a chat stream.
pub fn done() -> Bytes {
    Bytes::from_static(b"data: [DONE]\n\n")
}

/// A streamed reply in one provider's format: the frames before the first token, one per
/// delta, the frames that end it, and an in-stream error.
pub trait StreamFormat: Send {
    /// Frames before the first output token.
    fn start(&mut self) -> Vec<Bytes>;
    /// The frame carrying output `text` (one or more tokens).
    fn delta(&mut self, text: &str) -> Bytes;
    /// Frames that end a complete reply (finish reason, usage, terminator).
    fn finish(&mut self) -> Vec<Bytes>;
    /// The provider's in-stream error frame.
    fn error(&mut self, message: &str) -> Bytes;
}

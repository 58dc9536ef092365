//! Anthropic's Messages format, whole and streamed.

use bytes::Bytes;
use serde_json::{Value, json};

use crate::openai::opt_u64;
use crate::reply::{Finish, Plan, text};
use crate::sse::{self, StreamFormat};

/// A messages request's `max_tokens`: required, as the real API requires it.
pub fn max_tokens(body: &Value) -> Result<u64, String> {
    opt_u64(body, "max_tokens")?.ok_or_else(|| "max_tokens: Field required".into())
}

fn stop_reason(f: Finish) -> &'static str {
    match f {
        Finish::Stop => "end_turn",
        Finish::Length => "max_tokens",
    }
}

/// A message, whole or streamed.
#[derive(Debug, Clone)]
pub struct Message {
    /// `msg_...`.
    pub id: String,
    /// The model as requested.
    pub model: String,
    /// What to answer.
    pub plan: Plan,
}

impl Message {
    fn usage(&self, output: u64) -> Value {
        json!({
            "input_tokens": self.plan.input_tokens,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
            "output_tokens": output,
            "service_tier": "standard",
        })
    }

    fn message(&self, content: Value, stop: Option<&str>, output: u64) -> Value {
        json!({
            "id": self.id,
            "type": "message",
            "role": "assistant",
            "model": self.model,
            "content": content,
            "stop_reason": stop,
            "stop_sequence": null,
            "usage": self.usage(output),
        })
    }

    /// The non-streamed body.
    pub fn body(&self) -> Value {
        let t = text(0, self.plan.output_tokens);
        self.message(
            json!([{"type": "text", "text": t}]),
            Some(stop_reason(self.plan.finish)),
            self.plan.output_tokens,
        )
    }
}

impl StreamFormat for Message {
    fn start(&mut self) -> Vec<Bytes> {
        // The real API reports a small running output count at the start; the final
        // `message_delta` carries the cumulative total, which replaces it.
        let started = self.message(json!([]), None, self.plan.output_tokens.min(1));
        vec![
            sse::event(
                "message_start",
                &json!({"type": "message_start", "message": started}),
            ),
            sse::event(
                "content_block_start",
                &json!({"type": "content_block_start", "index": 0,
                        "content_block": {"type": "text", "text": ""}}),
            ),
            sse::event("ping", &json!({"type": "ping"})),
        ]
    }

    fn delta(&mut self, text: &str) -> Bytes {
        sse::event(
            "content_block_delta",
            &json!({"type": "content_block_delta", "index": 0,
                    "delta": {"type": "text_delta", "text": text}}),
        )
    }

    fn finish(&mut self) -> Vec<Bytes> {
        vec![
            sse::event(
                "content_block_stop",
                &json!({"type": "content_block_stop", "index": 0}),
            ),
            sse::event(
                "message_delta",
                &json!({"type": "message_delta",
                        "delta": {"stop_reason": stop_reason(self.plan.finish),
                                  "stop_sequence": null},
                        "usage": {"output_tokens": self.plan.output_tokens}}),
            ),
            sse::event("message_stop", &json!({"type": "message_stop"})),
        ]
    }

    fn error(&mut self, message: &str) -> Bytes {
        sse::event(
            "error",
            &json!({"type": "error",
                    "error": {"type": "overloaded_error", "message": message}}),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_reports_input_at_start_and_total_output_at_the_end() {
        let mut m = Message {
            id: "msg_1".into(),
            model: "claude-sonnet-4-5".into(),
            plan: Plan {
                input_tokens: 9,
                output_tokens: 3,
                finish: Finish::Length,
            },
        };
        let start = String::from_utf8_lossy(&m.start()[0]).to_string();
        assert!(start.starts_with("event: message_start\n"));
        assert!(start.contains("\"input_tokens\":9") && start.contains("\"output_tokens\":1"));
        let end: Vec<String> = m
            .finish()
            .iter()
            .map(|b| String::from_utf8_lossy(b).to_string())
            .collect();
        assert!(end[1].contains("\"stop_reason\":\"max_tokens\""));
        assert!(end[1].contains("\"output_tokens\":3"));
        assert!(max_tokens(&json!({})).is_err());
    }
}

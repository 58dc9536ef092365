//! OpenAI's formats: chat completions, responses and embeddings, whole and streamed.

use base64::Engine as _;
use bytes::Bytes;
use serde_json::{Value, json};

use crate::reply::{Finish, Plan, text};
use crate::sse::{self, StreamFormat};

/// Reads an optional non-negative integer field.
pub(crate) fn opt_u64(body: &Value, field: &str) -> Result<Option<u64>, String> {
    match body.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_u64()
            .map(Some)
            .ok_or_else(|| format!("`{field}` must be a non-negative integer")),
    }
}

/// The request's `model`, required.
pub(crate) fn model(body: &Value) -> Result<String, String> {
    body.get("model")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .ok_or_else(|| "`model` is required and must be a string".into())
}

/// A chat request's maximum output: `max_completion_tokens`, else `max_tokens`.
pub fn chat_max(body: &Value) -> Result<Option<u64>, String> {
    Ok(opt_u64(body, "max_completion_tokens")?.or(opt_u64(body, "max_tokens")?))
}

/// A responses request's maximum output: `max_output_tokens`.
pub fn responses_max(body: &Value) -> Result<Option<u64>, String> {
    opt_u64(body, "max_output_tokens")
}

/// True when the request asks for a stream.
pub fn wants_stream(body: &Value) -> bool {
    body.get("stream").and_then(Value::as_bool).unwrap_or(false)
}

fn finish_reason(f: Finish) -> &'static str {
    match f {
        Finish::Stop => "stop",
        Finish::Length => "length",
    }
}

fn chat_usage(p: &Plan) -> Value {
    json!({
        "prompt_tokens": p.input_tokens,
        "completion_tokens": p.output_tokens,
        "total_tokens": p.input_tokens + p.output_tokens,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0,
            "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0},
    })
}

/// A chat completion, whole or streamed.
#[derive(Debug, Clone)]
pub struct Chat {
    /// `chatcmpl-...`.
    pub id: String,
    /// The model as requested.
    pub model: String,
    /// Unix seconds.
    pub created: u64,
    /// What to answer.
    pub plan: Plan,
    /// `stream_options.include_usage`.
    pub include_usage: bool,
}

impl Chat {
    /// The non-streamed body.
    pub fn body(&self) -> Value {
        json!({
            "id": self.id,
            "object": "chat.completion",
            "created": self.created,
            "model": self.model,
            "choices": [{
                "index": 0,
                "message": {"role": "assistant", "content": text(0, self.plan.output_tokens),
                            "refusal": null, "annotations": []},
                "logprobs": null,
                "finish_reason": finish_reason(self.plan.finish),
            }],
            "usage": chat_usage(&self.plan),
            "service_tier": "default",
            "system_fingerprint": "fp_llm_upstream",
        })
    }

    fn chunk(&self, choices: Value, usage: Option<Value>) -> Bytes {
        let mut c = json!({
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "service_tier": "default",
            "system_fingerprint": "fp_llm_upstream",
            "choices": choices,
        });
        if self.include_usage {
            c["usage"] = usage.unwrap_or(Value::Null);
        }
        sse::data(&c)
    }

    /// Whether a request asked for the usage chunk.
    pub fn include_usage(body: &Value) -> bool {
        body.pointer("/stream_options/include_usage")
            .and_then(Value::as_bool)
            .unwrap_or(false)
    }
}

impl StreamFormat for Chat {
    fn start(&mut self) -> Vec<Bytes> {
        vec![self.chunk(
            json!([{"index": 0, "delta": {"role": "assistant", "content": "", "refusal": null},
                    "logprobs": null, "finish_reason": null}]),
            None,
        )]
    }

    fn delta(&mut self, text: &str) -> Bytes {
        self.chunk(
            json!([{"index": 0, "delta": {"content": text}, "logprobs": null,
                    "finish_reason": null}]),
            None,
        )
    }

    fn finish(&mut self) -> Vec<Bytes> {
        let mut out = vec![self.chunk(
            json!([{"index": 0, "delta": {}, "logprobs": null,
                    "finish_reason": finish_reason(self.plan.finish)}]),
            None,
        )];
        if self.include_usage {
            out.push(self.chunk(json!([]), Some(chat_usage(&self.plan))));
        }
        out.push(sse::done());
        out
    }

    fn error(&mut self, message: &str) -> Bytes {
        sse::data(
            &json!({"error": {"message": message, "type": "server_error",
                                    "param": null, "code": null}}),
        )
    }
}

/// A response of the Responses API, whole or streamed.
#[derive(Debug, Clone)]
pub struct Responses {
    /// `resp_...`.
    pub id: String,
    /// The output message's id, `msg_...`.
    pub item_id: String,
    /// The model as requested.
    pub model: String,
    /// Unix seconds.
    pub created: u64,
    /// What to answer.
    pub plan: Plan,
    /// The request's `max_output_tokens`.
    pub max_output_tokens: Option<u64>,
    /// Next `sequence_number`.
    pub seq: u64,
    /// Text streamed so far.
    pub sent: String,
}

impl Responses {
    fn usage(&self) -> Value {
        let p = &self.plan;
        json!({
            "input_tokens": p.input_tokens,
            "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
            "output_tokens": p.output_tokens,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": p.input_tokens + p.output_tokens,
        })
    }

    fn item_status(&self, done: bool) -> &'static str {
        match (done, self.plan.finish) {
            (false, _) => "in_progress",
            (true, Finish::Stop) => "completed",
            (true, Finish::Length) => "incomplete",
        }
    }

    fn message(&self, text: &str, done: bool) -> Value {
        let content = if done || !text.is_empty() {
            json!([{"type": "output_text", "text": text, "annotations": [], "logprobs": []}])
        } else {
            json!([])
        };
        json!({"id": self.item_id, "type": "message", "status": self.item_status(done),
               "role": "assistant", "content": content})
    }

    /// The response object in state `status` with `output`; usage once finished.
    fn object(&self, status: &str, output: Value, finished: bool) -> Value {
        json!({
            "id": self.id,
            "object": "response",
            "created_at": self.created,
            "status": status,
            "background": false,
            "error": null,
            "incomplete_details": if status == "incomplete" {
                json!({"reason": "max_output_tokens"})
            } else {
                Value::Null
            },
            "instructions": null,
            "max_output_tokens": self.max_output_tokens,
            "model": self.model,
            "output": output,
            "parallel_tool_calls": true,
            "previous_response_id": null,
            "reasoning": {"effort": null, "summary": null},
            "service_tier": "default",
            "store": false,
            "temperature": 1.0,
            "text": {"format": {"type": "text"}},
            "tool_choice": "auto",
            "tools": [],
            "top_p": 1.0,
            "truncation": "disabled",
            "usage": if finished { self.usage() } else { Value::Null },
            "user": null,
            "metadata": {},
        })
    }

    fn final_status(&self) -> &'static str {
        match self.plan.finish {
            Finish::Stop => "completed",
            Finish::Length => "incomplete",
        }
    }

    /// The non-streamed body.
    pub fn body(&self) -> Value {
        let t = text(0, self.plan.output_tokens);
        self.object(self.final_status(), json!([self.message(&t, true)]), true)
    }

    fn ev(&mut self, name: &str, mut data: Value) -> Bytes {
        data["type"] = Value::from(name);
        data["sequence_number"] = Value::from(self.seq);
        self.seq += 1;
        sse::event(name, &data)
    }
}

impl StreamFormat for Responses {
    fn start(&mut self) -> Vec<Bytes> {
        let created = self.object("in_progress", json!([]), false);
        let part = json!({"type": "output_text", "text": "", "annotations": [], "logprobs": []});
        vec![
            self.ev("response.created", json!({"response": created})),
            self.ev("response.in_progress", json!({"response": created})),
            self.ev(
                "response.output_item.added",
                json!({"output_index": 0, "item": self.message("", false)}),
            ),
            self.ev(
                "response.content_part.added",
                json!({"item_id": self.item_id, "output_index": 0, "content_index": 0,
                       "part": part}),
            ),
        ]
    }

    fn delta(&mut self, text: &str) -> Bytes {
        self.sent.push_str(text);
        self.ev(
            "response.output_text.delta",
            json!({"item_id": self.item_id, "output_index": 0, "content_index": 0,
                   "delta": text, "logprobs": []}),
        )
    }

    fn finish(&mut self) -> Vec<Bytes> {
        let t = std::mem::take(&mut self.sent);
        let part = json!({"type": "output_text", "text": t, "annotations": [], "logprobs": []});
        let item = self.message(&t, true);
        let last = self.object(self.final_status(), json!([item.clone()]), true);
        let name = format!("response.{}", self.final_status());
        vec![
            self.ev(
                "response.output_text.done",
                json!({"item_id": self.item_id, "output_index": 0, "content_index": 0,
                       "text": t, "logprobs": []}),
            ),
            self.ev(
                "response.content_part.done",
                json!({"item_id": self.item_id, "output_index": 0, "content_index": 0,
                       "part": part}),
            ),
            self.ev(
                "response.output_item.done",
                json!({"output_index": 0, "item": item}),
            ),
            self.ev(&name, json!({"response": last})),
        ]
    }

    fn error(&mut self, message: &str) -> Bytes {
        self.ev(
            "error",
            json!({"code": "server_error", "message": message, "param": null}),
        )
    }
}

/// The embeddings body for `input` (a string, strings, token ids or arrays of them):
/// one vector of `dimensions` (default 8) per input, base64 of little-endian `f32` when
/// `encoding_format` is `base64` (the Python SDK's default), else JSON floats.
pub fn embeddings(body: &Value, model: &str, plan: &Plan) -> Result<Value, String> {
    let inputs = match body.get("input") {
        Some(Value::String(_)) => 1,
        Some(Value::Array(a)) if a.iter().all(Value::is_u64) && !a.is_empty() => 1,
        Some(Value::Array(a)) if !a.is_empty() => a.len(),
        _ => return Err("`input` must be a non-empty string or array".into()),
    };
    let dims = opt_u64(body, "dimensions")?.unwrap_or(8).clamp(1, 4096) as usize;
    let base64 = match body.get("encoding_format").and_then(Value::as_str) {
        None | Some("float") => false,
        Some("base64") => true,
        Some(other) => return Err(format!("unknown encoding_format {other:?}")),
    };
    let data: Vec<Value> = (0..inputs)
        .map(|i| {
            let v: Vec<f32> = (0..dims)
                .map(|d| ((i * 31 + d * 7) % 100) as f32 / 100.0)
                .collect();
            let embedding = if base64 {
                let bytes: Vec<u8> = v.iter().flat_map(|f| f.to_le_bytes()).collect();
                Value::from(base64::engine::general_purpose::STANDARD.encode(bytes))
            } else {
                Value::from(v)
            };
            json!({"object": "embedding", "index": i, "embedding": embedding})
        })
        .collect();
    Ok(json!({
        "object": "list",
        "data": data,
        "model": model,
        "usage": {"prompt_tokens": plan.input_tokens, "total_tokens": plan.input_tokens},
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(out: u64, finish: Finish) -> Plan {
        Plan {
            input_tokens: 5,
            output_tokens: out,
            finish,
        }
    }

    #[test]
    fn chat_stream_ends_with_usage_then_done() {
        let mut c = Chat {
            id: "chatcmpl-1".into(),
            model: "gpt-4o".into(),
            created: 1,
            plan: plan(2, Finish::Length),
            include_usage: true,
        };
        let start = c.start();
        assert!(String::from_utf8_lossy(&start[0]).contains("\"usage\":null"));
        let end = c.finish();
        let usage = String::from_utf8_lossy(&end[1]).to_string();
        assert!(usage.contains("\"choices\":[]"), "{usage}");
        assert!(usage.contains("\"completion_tokens\":2"), "{usage}");
        assert_eq!(&end[2][..], b"data: [DONE]\n\n");
        assert!(String::from_utf8_lossy(&end[0]).contains("\"finish_reason\":\"length\""));
    }

    #[test]
    fn responses_stream_is_sequenced_and_incomplete_when_cut() {
        let mut r = Responses {
            id: "resp_1".into(),
            item_id: "msg_1".into(),
            model: "gpt-4o".into(),
            created: 1,
            plan: plan(1, Finish::Length),
            max_output_tokens: Some(1),
            seq: 0,
            sent: String::new(),
        };
        let mut frames = r.start();
        frames.push(r.delta("the"));
        frames.extend(r.finish());
        let all: Vec<String> = frames
            .iter()
            .map(|b| String::from_utf8_lossy(b).to_string())
            .collect();
        for (i, f) in all.iter().enumerate() {
            assert!(f.contains(&format!("\"sequence_number\":{i}")), "{f}");
        }
        let last = all.last().unwrap();
        assert!(last.starts_with("event: response.incomplete\n"), "{last}");
        assert!(last.contains("\"reason\":\"max_output_tokens\""));
        assert!(last.contains("\"output_tokens\":1"));
    }

    #[test]
    fn embeddings_in_base64_decode_to_floats() {
        let body = json!({"input": ["a b", "c"], "encoding_format": "base64", "dimensions": 3});
        let e = embeddings(&body, "text-embedding-3-small", &plan(0, Finish::Stop)).unwrap();
        let b64 = e["data"][1]["embedding"].as_str().unwrap();
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .unwrap();
        assert_eq!(bytes.len(), 12);
        assert_eq!(e["usage"]["prompt_tokens"], 5);
        assert!(embeddings(&json!({"input": []}), "m", &plan(0, Finish::Stop)).is_err());
    }
}

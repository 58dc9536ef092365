//! What the gateway knows of each wire format: where a request's maximum output is, where
//! a response reports its usage, how a stream reports it, and how to end a stream cleanly.

use bytes::Bytes;
use serde_json::{Value, json};
use tollgate_core::Usage;

use crate::sse::{self, Event};

/// The endpoints served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Api {
    /// OpenAI `POST /v1/chat/completions`.
    Chat,
    /// Anthropic `POST /v1/messages`.
    Messages,
    /// OpenAI `POST /v1/responses`.
    Responses,
    /// OpenAI `POST /v1/embeddings` (input only, never streamed).
    Embeddings,
}

/// Which provider's formats (errors, auth headers) an endpoint speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// `{"error": {"message", "type", "param", "code"}}`, `Authorization: Bearer`.
    OpenAi,
    /// `{"type": "error", "error": {"type", "message"}}`, `x-api-key`.
    Anthropic,
}

impl Api {
    /// The request path (also the upstream's, after its base URL).
    pub fn path(self) -> &'static str {
        match self {
            Api::Chat => "/v1/chat/completions",
            Api::Messages => "/v1/messages",
            Api::Responses => "/v1/responses",
            Api::Embeddings => "/v1/embeddings",
        }
    }

    /// The provider format.
    pub fn dialect(self) -> Dialect {
        match self {
            Api::Chat | Api::Responses | Api::Embeddings => Dialect::OpenAi,
            Api::Messages => Dialect::Anthropic,
        }
    }

    /// The request's maximum output tokens, if it sets one.
    pub fn max_tokens(self, body: &Value) -> Option<u64> {
        match self {
            Api::Chat => body
                .get("max_completion_tokens")
                .and_then(Value::as_u64)
                .or_else(|| body.get("max_tokens").and_then(Value::as_u64)),
            Api::Messages => body.get("max_tokens").and_then(Value::as_u64),
            Api::Responses => body.get("max_output_tokens").and_then(Value::as_u64),
            // Embeddings produce no output tokens.
            Api::Embeddings => Some(0),
        }
    }

    /// Sets the request's maximum output tokens to `n` (the field it used, else the
    /// current one).
    pub fn set_max_tokens(self, body: &mut Value, n: u64) {
        let Some(obj) = body.as_object_mut() else {
            return;
        };
        match self {
            Api::Chat
                if obj.contains_key("max_tokens") && !obj.contains_key("max_completion_tokens") =>
            {
                obj.insert("max_tokens".into(), n.into());
            }
            Api::Chat => {
                obj.insert("max_completion_tokens".into(), n.into());
            }
            Api::Messages => {
                obj.insert("max_tokens".into(), n.into());
            }
            Api::Responses => {
                obj.insert("max_output_tokens".into(), n.into());
            }
            Api::Embeddings => {}
        }
    }

    /// The usage a whole (non-streamed) response reports.
    pub fn usage(self, body: &Value) -> Option<Usage> {
        let u = body.get("usage")?;
        match self {
            Api::Chat => Some(Usage::new(
                u.get("prompt_tokens")?.as_u64()?,
                u.get("completion_tokens")?.as_u64()?,
            )),
            Api::Messages => Some(Usage::new(
                anthropic_input(u)?,
                u.get("output_tokens")?.as_u64()?,
            )),
            Api::Responses => Some(Usage::new(
                u.get("input_tokens")?.as_u64()?,
                u.get("output_tokens")?.as_u64()?,
            )),
            Api::Embeddings => Some(Usage::new(
                u.get("prompt_tokens")
                    .or_else(|| u.get("total_tokens"))?
                    .as_u64()?,
                0,
            )),
        }
    }
}

/// Anthropic's input tokens: the uncached ones plus cache writes and reads, all of which
/// the provider bills (the price book has one input price, so they are charged at it).
fn anthropic_input(u: &Value) -> Option<u64> {
    let base = u.get("input_tokens")?.as_u64()?;
    let extra = ["cache_creation_input_tokens", "cache_read_input_tokens"]
        .iter()
        .filter_map(|k| u.get(*k).and_then(Value::as_u64))
        .fold(0u64, u64::saturating_add);
    Some(base.saturating_add(extra))
}

/// What to do with one upstream event.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// Send it on.
    Forward,
    /// Drop it (the usage chunk the gateway asked for and the caller did not).
    Skip,
    /// The output reached the reservation: send these events instead, then end.
    Cut(Vec<Bytes>),
}

/// Follows one stream: the usage it reports, the output sent so far, and where the
/// reservation's output ends.
#[derive(Debug)]
pub struct Meter {
    api: Api,
    /// Output tokens the reservation pays for.
    pub max_output: u64,
    /// The caller asked for OpenAI's usage chunk itself (else the gateway drops it).
    caller_usage: bool,
    /// Input tokens the stream reported (Anthropic's `message_start`).
    pub input_reported: Option<u64>,
    /// The final usage, once the stream reported it.
    pub final_usage: Option<Usage>,
    /// Content deltas forwarded.
    deltas: u64,
    /// Bytes of content forwarded.
    text_bytes: u64,
    /// The stream ended normally (`[DONE]`, `message_stop`).
    pub finished: bool,
    /// The upstream sent an in-stream error.
    pub errored: bool,
    /// The gateway ended the stream at the budget line.
    pub cut: bool,
    /// Chat: the last chunk's id, created and model (for the chunk that ends a cut stream).
    chat_head: Option<(Value, Value, Value)>,
    /// Messages: the open content block.
    block: Option<u64>,
    /// Responses: the response object as last announced, the output item's id, the text
    /// forwarded and the next sequence number (for the events that end a cut stream).
    response: Option<Value>,
    item_id: Value,
    text: String,
    next_seq: u64,
    /// The request's estimated input tokens (what a cut stream reports as its input when
    /// the provider reported none).
    input_estimate: u64,
}

impl Meter {
    /// A meter for a stream of `api` whose reservation pays `max_output` tokens.
    pub fn new(api: Api, max_output: u64, caller_usage: bool, input_estimate: u64) -> Meter {
        Meter {
            api,
            max_output,
            caller_usage,
            input_reported: None,
            final_usage: None,
            deltas: 0,
            text_bytes: 0,
            finished: false,
            errored: false,
            cut: false,
            chat_head: None,
            block: None,
            response: None,
            item_id: Value::Null,
            text: String::new(),
            next_seq: 0,
            input_estimate,
        }
    }

    /// Output tokens forwarded so far, as counted while streaming: each content delta is
    /// at least one token and a token carries at most about 4 bytes of text, so the larger
    /// of the two counts (exact for providers that stream one token per delta, as OpenAI
    /// does).
    pub fn output_so_far(&self) -> u64 {
        self.deltas.max(self.text_bytes.div_ceil(4))
    }

    /// Would forwarding a delta of `bytes` bytes of text take the output past the
    /// reservation? If not, counts it.
    fn admit(&mut self, bytes: usize) -> bool {
        if bytes == 0 {
            return true;
        }
        let deltas = self.deltas + 1;
        let text = self.text_bytes + bytes as u64;
        if deltas.max(text.div_ceil(4)) > self.max_output {
            return false;
        }
        self.deltas = deltas;
        self.text_bytes = text;
        true
    }

    /// Decides about one event.
    pub fn on_event(&mut self, ev: &Event) -> Step {
        match self.api {
            Api::Chat => self.on_chat(ev),
            Api::Messages => self.on_message(ev),
            Api::Responses => self.on_response(ev),
            // Not streamed; forwarded as is.
            Api::Embeddings => Step::Forward,
        }
    }

    fn on_chat(&mut self, ev: &Event) -> Step {
        if ev.data.trim() == "[DONE]" {
            self.finished = true;
            return Step::Forward;
        }
        let Ok(v) = serde_json::from_str::<Value>(&ev.data) else {
            return Step::Forward;
        };
        if v.get("error").is_some_and(|e| !e.is_null()) {
            self.errored = true;
            return Step::Forward;
        }
        // Every chunk repeats them: kept once.
        if self.chat_head.is_none()
            && let (Some(id), Some(created), Some(model)) =
                (v.get("id"), v.get("created"), v.get("model"))
        {
            self.chat_head = Some((id.clone(), created.clone(), model.clone()));
        }
        let choices = v.get("choices").and_then(Value::as_array);
        if let Some(usage) = Api::Chat.usage(&v) {
            self.final_usage = Some(usage);
            if !self.caller_usage && choices.is_none_or(|c| c.is_empty()) {
                return Step::Skip;
            }
        }
        let bytes: usize = choices
            .into_iter()
            .flatten()
            .filter_map(|c| c.get("delta"))
            .map(delta_text_bytes)
            .sum();
        if self.admit(bytes) {
            Step::Forward
        } else {
            self.cut = true;
            Step::Cut(self.chat_cut())
        }
    }

    fn chat_cut(&self) -> Vec<Bytes> {
        let (id, created, model) =
            self.chat_head
                .clone()
                .unwrap_or((json!("chatcmpl-tollgate"), json!(0), json!("")));
        let mut end = json!({"id": id, "object": "chat.completion.chunk", "created": created,
            "model": model, "choices": [{"index": 0, "delta": {}, "logprobs": null,
            "finish_reason": "length"}]});
        let mut out = Vec::new();
        if self.caller_usage {
            end["usage"] = Value::Null;
            out.push(sse::data(&end));
            let usage = self.usage_to_commit();
            out.push(sse::data(
                &json!({"id": id, "object": "chat.completion.chunk",
                "created": created, "model": model, "choices": [],
                "usage": {"prompt_tokens": usage.input_tokens,
                          "completion_tokens": usage.output_tokens,
                          "total_tokens": usage.input_tokens.saturating_add(usage.output_tokens)}}),
            ));
        } else {
            out.push(sse::data(&end));
        }
        out.push(sse::done());
        out
    }

    fn on_message(&mut self, ev: &Event) -> Step {
        let Ok(v) = serde_json::from_str::<Value>(&ev.data) else {
            return Step::Forward;
        };
        let kind = if ev.name.is_empty() {
            v.get("type").and_then(Value::as_str).unwrap_or("")
        } else {
            ev.name.as_str()
        };
        match kind {
            "message_start" => {
                self.input_reported = v
                    .get("message")
                    .and_then(|m| m.get("usage"))
                    .and_then(anthropic_input);
            }
            "content_block_start" => self.block = v.get("index").and_then(Value::as_u64),
            "content_block_stop" => self.block = None,
            "content_block_delta" => {
                let bytes = v.get("delta").map(delta_text_bytes).unwrap_or(0);
                if !self.admit(bytes) {
                    self.cut = true;
                    return Step::Cut(self.message_cut());
                }
            }
            "message_delta" => {
                if let Some(u) = v.get("usage") {
                    let input = anthropic_input(u).or(self.input_reported);
                    if let (Some(i), Some(o)) =
                        (input, u.get("output_tokens").and_then(Value::as_u64))
                    {
                        self.final_usage = Some(Usage::new(i, o));
                    }
                }
            }
            "message_stop" => self.finished = true,
            "error" => self.errored = true,
            _ => {}
        }
        Step::Forward
    }

    fn on_response(&mut self, ev: &Event) -> Step {
        let Ok(v) = serde_json::from_str::<Value>(&ev.data) else {
            return Step::Forward;
        };
        // The events that end a cut stream follow the last one forwarded.
        let seq = v.get("sequence_number").and_then(Value::as_u64);
        let kind = v
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or(ev.name.as_str());
        match kind {
            "response.created" | "response.in_progress" => {
                self.response = v.get("response").cloned();
            }
            "response.output_text.delta" => {
                let delta = v.get("delta").and_then(Value::as_str).unwrap_or("");
                if !self.admit(delta.len()) {
                    self.cut = true;
                    return Step::Cut(self.response_cut());
                }
                self.text.push_str(delta);
                if let Some(id) = v.get("item_id") {
                    self.item_id = id.clone();
                }
            }
            "response.function_call_arguments.delta" | "response.reasoning_summary_text.delta" => {
                let delta = v.get("delta").and_then(Value::as_str).unwrap_or("");
                if !self.admit(delta.len()) {
                    self.cut = true;
                    return Step::Cut(self.response_cut());
                }
            }
            "response.completed" | "response.incomplete" | "response.failed" => {
                if let Some(u) = v.get("response").and_then(|r| Api::Responses.usage(r)) {
                    self.final_usage = Some(u);
                }
                self.finished = true;
            }
            "error" => self.errored = true,
            _ => {}
        }
        if let Some(n) = seq {
            self.next_seq = n + 1;
        }
        Step::Forward
    }

    /// The events that close the output item and end the response as incomplete at
    /// `max_output_tokens`, as the provider ends one cut at its maximum.
    fn response_cut(&mut self) -> Vec<Bytes> {
        let mut seq = self.next_seq;
        let mut ev = |name: &str, mut data: Value| {
            data["type"] = Value::from(name);
            data["sequence_number"] = Value::from(seq);
            seq += 1;
            sse::named(name, &data)
        };
        let text = self.text.clone();
        let part = json!({"type": "output_text", "text": text, "annotations": [], "logprobs": []});
        let item = json!({"id": self.item_id, "type": "message", "status": "incomplete",
                          "role": "assistant", "content": [part.clone()]});
        let usage = self.usage_to_commit();
        let mut response = self.response.clone().unwrap_or_else(|| json!({}));
        response["status"] = json!("incomplete");
        response["incomplete_details"] = json!({"reason": "max_output_tokens"});
        response["output"] = json!([item.clone()]);
        response["usage"] = json!({
            "input_tokens": usage.input_tokens,
            "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
            "output_tokens": usage.output_tokens,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": usage.input_tokens.saturating_add(usage.output_tokens),
        });
        let out = vec![
            ev(
                "response.output_text.done",
                json!({"item_id": self.item_id, "output_index": 0, "content_index": 0,
                       "text": text, "logprobs": []}),
            ),
            ev(
                "response.content_part.done",
                json!({"item_id": self.item_id, "output_index": 0, "content_index": 0,
                       "part": part}),
            ),
            ev(
                "response.output_item.done",
                json!({"output_index": 0, "item": item}),
            ),
            ev("response.incomplete", json!({"response": response})),
        ];
        self.next_seq = seq;
        out
    }

    fn message_cut(&self) -> Vec<Bytes> {
        let mut out = Vec::new();
        if let Some(i) = self.block {
            out.push(sse::named(
                "content_block_stop",
                &json!({"type": "content_block_stop", "index": i}),
            ));
        }
        out.push(sse::named(
            "message_delta",
            &json!({"type": "message_delta",
                    "delta": {"stop_reason": "max_tokens", "stop_sequence": null},
                    "usage": {"output_tokens": self.output_so_far()}}),
        ));
        out.push(sse::named("message_stop", &json!({"type": "message_stop"})));
        out
    }

    /// The usage to commit when the stream is over: what the provider reported as final;
    /// else (cut by the gateway, cut by the client, failed upstream) the input it reported
    /// (or the estimate) and the whole reserved output, since the provider may have made
    /// more than was forwarded before it noticed the connection close.
    pub fn usage_to_commit(&self) -> Usage {
        match self.final_usage {
            Some(u) if !self.cut => u,
            _ => Usage::new(
                self.input_reported.unwrap_or(self.input_estimate),
                self.max_output,
            ),
        }
    }
}

/// Bytes of generated text in a chat or messages delta (content, refusals, reasoning,
/// tool call arguments).
fn delta_text_bytes(d: &Value) -> usize {
    let mut n = 0;
    for k in [
        "content",
        "refusal",
        "text",
        "thinking",
        "partial_json",
        "reasoning_content",
    ] {
        if let Some(s) = d.get(k).and_then(Value::as_str) {
            n += s.len();
        }
    }
    if let Some(calls) = d.get("tool_calls").and_then(Value::as_array) {
        for c in calls {
            if let Some(f) = c.get("function") {
                for k in ["name", "arguments"] {
                    if let Some(s) = f.get(k).and_then(Value::as_str) {
                        n += s.len();
                    }
                }
            }
        }
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sse::Splitter;

    fn events(text: &str) -> Vec<Event> {
        Splitter::default().push(text.as_bytes()).unwrap()
    }

    #[test]
    fn max_tokens_fields() {
        let mut b = json!({"max_tokens": 7});
        assert_eq!(Api::Chat.max_tokens(&b), Some(7));
        Api::Chat.set_max_tokens(&mut b, 3);
        assert_eq!(b, json!({"max_tokens": 3}));
        let mut c = json!({"max_completion_tokens": 9, "max_tokens": 50});
        assert_eq!(Api::Chat.max_tokens(&c), Some(9));
        Api::Chat.set_max_tokens(&mut c, 4);
        assert_eq!(c["max_completion_tokens"], 4);
        let mut d = json!({});
        Api::Chat.set_max_tokens(&mut d, 5);
        assert_eq!(d, json!({"max_completion_tokens": 5}));
        assert_eq!(Api::Messages.max_tokens(&json!({"max_tokens": 2})), Some(2));
    }

    #[test]
    fn usage_of_whole_responses() {
        let chat = json!({"usage": {"prompt_tokens": 3, "completion_tokens": 4}});
        assert_eq!(Api::Chat.usage(&chat), Some(Usage::new(3, 4)));
        let msg = json!({"usage": {"input_tokens": 3, "output_tokens": 5,
            "cache_read_input_tokens": 10, "cache_creation_input_tokens": null}});
        assert_eq!(Api::Messages.usage(&msg), Some(Usage::new(13, 5)));
        assert_eq!(Api::Chat.usage(&json!({})), None);
        let resp = json!({"usage": {"input_tokens": 2, "output_tokens": 3}});
        assert_eq!(Api::Responses.usage(&resp), Some(Usage::new(2, 3)));
        let emb = json!({"usage": {"prompt_tokens": 5, "total_tokens": 5}});
        assert_eq!(Api::Embeddings.usage(&emb), Some(Usage::new(5, 0)));
        assert_eq!(Api::Embeddings.max_tokens(&json!({})), Some(0));
    }

    #[test]
    fn chat_stream_usage_and_cut() {
        let mut m = Meter::new(Api::Chat, 2, false, 11);
        let evs = events(concat!(
            "data: {\"id\":\"c\",\"created\":1,\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}]}\n\n",
            "data: {\"id\":\"c\",\"created\":1,\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"the\"}}]}\n\n",
            "data: {\"id\":\"c\",\"created\":1,\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\" of\"}}]}\n\n",
            "data: {\"id\":\"c\",\"created\":1,\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\" and\"}}]}\n\n",
        ));
        let steps: Vec<Step> = evs.iter().map(|e| m.on_event(e)).collect();
        assert_eq!(steps[..3], [Step::Forward, Step::Forward, Step::Forward]);
        let Step::Cut(end) = &steps[3] else {
            panic!("{steps:?}")
        };
        let tail = String::from_utf8(end.concat()).unwrap();
        assert!(tail.contains("\"finish_reason\":\"length\""), "{tail}");
        assert!(tail.ends_with("data: [DONE]\n\n"));
        assert_eq!(m.usage_to_commit(), Usage::new(11, 2));

        let mut u = Meter::new(Api::Chat, 10, false, 99);
        let usage = events(
            "data: {\"id\":\"c\",\"created\":1,\"model\":\"m\",\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":1}}\n\ndata: [DONE]\n\n",
        );
        assert_eq!(
            u.on_event(&usage[0]),
            Step::Skip,
            "the caller did not ask for usage"
        );
        assert_eq!(u.on_event(&usage[1]), Step::Forward);
        assert!(u.finished);
        assert_eq!(u.usage_to_commit(), Usage::new(3, 1));
    }

    #[test]
    fn responses_stream_cut_ends_incomplete() {
        let text = concat!(
            "event: response.created\ndata: {\"type\":\"response.created\",\"sequence_number\":0,\"response\":{\"id\":\"resp_1\",\"status\":\"in_progress\"}}\n\n",
            "event: response.output_text.delta\ndata: {\"type\":\"response.output_text.delta\",\"sequence_number\":1,\"item_id\":\"msg_1\",\"delta\":\"the\"}\n\n",
            "event: response.output_text.delta\ndata: {\"type\":\"response.output_text.delta\",\"sequence_number\":2,\"item_id\":\"msg_1\",\"delta\":\" of\"}\n\n",
        );
        let evs = events(text);
        let mut m = Meter::new(Api::Responses, 1, false, 7);
        assert_eq!(m.on_event(&evs[0]), Step::Forward);
        assert_eq!(m.on_event(&evs[1]), Step::Forward);
        let Step::Cut(end) = m.on_event(&evs[2]) else {
            panic!("the second token passes a one-token reservation")
        };
        let last = Splitter::default().push(&end.concat()).unwrap();
        let names: Vec<&str> = last.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "response.output_text.done",
                "response.content_part.done",
                "response.output_item.done",
                "response.incomplete"
            ]
        );
        let fin: Value = serde_json::from_str(&last[3].data).unwrap();
        assert_eq!(
            fin["sequence_number"], 5,
            "numbered on from the last one forwarded"
        );
        assert_eq!(fin["response"]["id"], "resp_1");
        assert_eq!(fin["response"]["output"][0]["content"][0]["text"], "the");
        assert_eq!(
            fin["response"]["incomplete_details"]["reason"],
            "max_output_tokens"
        );
        assert_eq!(m.usage_to_commit(), Usage::new(7, 1));
    }

    #[test]
    fn messages_stream_usage_and_fallback() {
        let text = concat!(
            "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":3,\"output_tokens\":1}}}\n\n",
            "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0}\n\n",
            "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"the of\"}}\n\n",
            "event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{},\"usage\":{\"output_tokens\":2}}\n\n",
            "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n",
        );
        let evs = events(text);
        let mut m = Meter::new(Api::Messages, 5, false, 40);
        // Before the final usage: the reported input and the whole reserved output.
        m.on_event(&evs[0]);
        assert_eq!(m.usage_to_commit(), Usage::new(3, 5));
        for e in &evs[1..] {
            assert_eq!(m.on_event(e), Step::Forward);
        }
        assert!(m.finished);
        assert_eq!(m.usage_to_commit(), Usage::new(3, 2));

        let mut cut = Meter::new(Api::Messages, 1, false, 40);
        for e in &evs[..2] {
            cut.on_event(e);
        }
        let Step::Cut(end) = cut.on_event(&evs[2]) else {
            panic!("two deltas' worth of text passes a one-token reservation")
        };
        let tail = String::from_utf8(end.concat()).unwrap();
        assert!(tail.starts_with("event: content_block_stop"), "{tail}");
        assert!(tail.contains("\"stop_reason\":\"max_tokens\""));
        assert!(tail.ends_with("event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n"));
    }
}

//! A conservative estimate of a request's input tokens, made before the call.
//!
//! The reservation must cover what the call can cost, so the estimate errs high; the
//! commit uses the usage the provider reports, so an estimate that is too high costs
//! nothing but briefly held budget. No tokenizer is bundled: the well-kept Rust BPE crates
//! embed each vocabulary (megabytes per model family) and cover OpenAI's encodings only,
//! while the rule below covers every model and is never far below a real count.
//!
//! **The rule.** Every string of the prompt (message contents, text parts, `system`,
//! `instructions`, `input`, `prompt`, tool names, descriptions and JSON schemas, tool call
//! arguments and results) counts `ceil(bytes / 3)` tokens: BPE tokenizers average about 4
//! bytes of English per token and rarely fewer than 3 for any text but digits and rare
//! scripts. Each message (or input item) adds [`PER_MESSAGE`] tokens for its role and
//! framing, each request [`PER_REQUEST`]. An image or document part counts
//! [`PER_ATTACHMENT`] tokens instead of its bytes (base64 data would count hundreds of
//! thousands): the most either provider charges for one image at its default detail.

use serde_json::Value;

/// Framing tokens of one message (OpenAI documents 3-4 per message).
pub const PER_MESSAGE: u64 = 4;
/// Framing tokens of the whole request (the reply's priming).
pub const PER_REQUEST: u64 = 3;
/// Tokens of one image, audio or document part (not decoded).
pub const PER_ATTACHMENT: u64 = 1_600;

/// Tokens of a text: `ceil(bytes / 3)`.
pub fn text_tokens(s: &str) -> u64 {
    (s.len() as u64).div_ceil(3)
}

/// The estimated input tokens of an OpenAI or Anthropic request body.
pub fn input_tokens(body: &Value) -> u64 {
    let mut n = PER_REQUEST;
    for key in ["messages", "input"] {
        match body.get(key) {
            Some(Value::Array(items)) => {
                for item in items {
                    n = n.saturating_add(PER_MESSAGE).saturating_add(walk(item));
                }
            }
            Some(v) => n = n.saturating_add(PER_MESSAGE).saturating_add(walk(v)),
            None => {}
        }
    }
    for key in [
        "system",
        "instructions",
        "prompt",
        "tools",
        "functions",
        "tool_choice",
        "response_format",
        "text",
    ] {
        if let Some(v) = body.get(key) {
            n = n.saturating_add(walk(v));
        }
    }
    n
}

/// Counts every string under `v`, attachments at their flat rate.
fn walk(v: &Value) -> u64 {
    match v {
        Value::String(s) => text_tokens(s),
        // Token ids (embeddings' input): one token each.
        Value::Number(_) => 1,
        Value::Array(items) => items.iter().fold(0u64, |a, i| a.saturating_add(walk(i))),
        Value::Object(map) => {
            if is_attachment(map) {
                return PER_ATTACHMENT;
            }
            map.iter().fold(0u64, |a, (k, v)| {
                // Keys of tool schemas are text the model reads; a part's "type" is framing.
                let key = if k == "type" { 0 } else { text_tokens(k) };
                a.saturating_add(key).saturating_add(walk(v))
            })
        }
        Value::Bool(_) | Value::Null => 0,
    }
}

/// An image, audio or document part, in either provider's shape.
fn is_attachment(map: &serde_json::Map<String, Value>) -> bool {
    matches!(
        map.get("type").and_then(Value::as_str),
        Some(
            "image_url"
                | "image"
                | "input_image"
                | "input_audio"
                | "document"
                | "input_file"
                | "file"
        )
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn text_is_a_third_of_its_bytes_rounded_up() {
        assert_eq!(text_tokens(""), 0);
        assert_eq!(text_tokens("a"), 1);
        assert_eq!(text_tokens("abc"), 1);
        assert_eq!(text_tokens("abcd"), 2);
        // Multi-byte text counts its bytes, which is what makes it conservative.
        assert_eq!(text_tokens("日本語"), 3);
    }

    #[test]
    fn chat_and_messages_bodies() {
        let chat = json!({"model": "gpt-4o", "max_tokens": 5, "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "one two three"}]});
        // 3 + (4 + role 2 + content 3) + (4 + role 2 + content 5)... roles are strings too.
        let want = PER_REQUEST
            + 2 * PER_MESSAGE
            + text_tokens("role") * 2
            + text_tokens("content") * 2
            + text_tokens("system")
            + text_tokens("be brief")
            + text_tokens("user")
            + text_tokens("one two three");
        assert_eq!(input_tokens(&chat), want);
        let msgs = json!({"model": "claude", "max_tokens": 5, "system": "sys",
            "messages": [{"role": "user", "content": [
                {"type": "text", "text": "hello"},
                {"type": "image", "source": {"type": "base64", "data": "A".repeat(100_000)}}]}]});
        let n = input_tokens(&msgs);
        assert!((PER_ATTACHMENT..PER_ATTACHMENT + 40).contains(&n), "{n}");
    }

    #[test]
    fn never_below_a_word_count() {
        // llm-upstream counts whitespace-separated words; the estimate must not be lower
        // for any text (every word has at least one byte and a separator).
        for text in ["a b c d e f", "the of and to in", "x", "one  two\nthree"] {
            let body = json!({"messages": [{"role": "user", "content": text}]});
            assert!(input_tokens(&body) >= text.split_whitespace().count() as u64);
        }
        assert_eq!(input_tokens(&json!({})), PER_REQUEST);
        assert_eq!(
            input_tokens(&json!({"input": [[1, 2, 3]]})),
            PER_REQUEST + PER_MESSAGE + 3
        );
    }
}

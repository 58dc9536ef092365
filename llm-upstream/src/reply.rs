//! What a request gets: counted input, the output tokens and why the output ends. Pure
//! functions of the request body and its controls.

use serde_json::Value;

use crate::controls::Controls;

/// Words that OpenAI's `cl100k_base` and `o200k_base` encodings each count as one token,
/// alone and with a leading space, so a streamed delta of k words is k tokens.
pub const VOCABULARY: [&str; 16] = [
    "the", "of", "and", "to", "in", "is", "it", "that", "for", "on", "with", "as", "was", "at",
    "by", "be",
];

/// Output token `i` of a reply (a leading space after the first).
pub fn token(i: u64) -> String {
    let w = VOCABULARY[(i % VOCABULARY.len() as u64) as usize];
    if i == 0 {
        w.to_owned()
    } else {
        format!(" {w}")
    }
}

/// Output tokens `from..to` as one string.
pub fn text(from: u64, to: u64) -> String {
    (from..to).map(token).collect()
}

/// Why the output ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finish {
    /// The model said all it wanted.
    Stop,
    /// Cut at the request's maximum.
    Length,
}

/// The plan for one reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    /// Input tokens to report.
    pub input_tokens: u64,
    /// Output tokens to produce.
    pub output_tokens: u64,
    /// Why the output ends.
    pub finish: Finish,
}

impl Plan {
    /// The reply to a request whose maximum is `max`, counted input `counted`.
    pub fn new(max: Option<u64>, counted: u64, c: &Controls, default_output: u64) -> Plan {
        let wanted = c.output_tokens.or(max).unwrap_or(default_output);
        let (output_tokens, finish) = match max {
            Some(m) if wanted > m && !c.ignore_max => (m, Finish::Length),
            _ => (wanted, Finish::Stop),
        };
        Plan {
            input_tokens: c.input_tokens.unwrap_or(counted),
            output_tokens,
            finish,
        }
    }
}

/// Words in a string.
pub fn words(s: &str) -> u64 {
    s.split_whitespace().count() as u64
}

/// Input tokens of any request body: the words of every text it carries (strings under
/// `content`, `text`, `system`, `instructions`, `input`, `prompt`, recursively through
/// arrays and objects) plus the length of every array of token ids under `input`.
pub fn count_input(body: &Value) -> u64 {
    let mut n = 0;
    for key in ["messages", "system", "instructions", "input", "prompt"] {
        if let Some(v) = body.get(key) {
            n += count_value(v, true);
        }
    }
    n
}

/// Counts `v`: strings are texts when `text` (a field that holds text), arrays of integers
/// are token ids; objects contribute their text fields.
fn count_value(v: &Value, text: bool) -> u64 {
    match v {
        Value::String(s) if text => words(s),
        Value::Array(items) if !items.is_empty() && items.iter().all(Value::is_u64) => {
            items.len() as u64
        }
        Value::Array(items) => items.iter().map(|i| count_value(i, text)).sum(),
        Value::Object(map) => map
            .iter()
            .map(|(k, v)| match k.as_str() {
                "content" | "text" | "input" => count_value(v, true),
                _ => 0,
            })
            .sum(),
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_maximum_cuts_unless_ignored() {
        let c = Controls {
            output_tokens: Some(50),
            ..Controls::default()
        };
        assert_eq!(
            Plan::new(Some(20), 3, &c, 16),
            Plan {
                input_tokens: 3,
                output_tokens: 20,
                finish: Finish::Length
            }
        );
        let over = Controls {
            ignore_max: true,
            ..c.clone()
        };
        assert_eq!(Plan::new(Some(20), 3, &over, 16).output_tokens, 50);
        assert_eq!(
            Plan::new(None, 0, &Controls::default(), 16).finish,
            Finish::Stop
        );
        assert_eq!(
            Plan::new(Some(8), 0, &Controls::default(), 16).output_tokens,
            8
        );
    }

    #[test]
    fn counts_texts_and_token_arrays() {
        let chat = json!({"model": "m", "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": [{"type": "text", "text": "hello there you"},
                                         {"type": "image_url", "image_url": {"url": "x y z"}}]}]});
        assert_eq!(count_input(&chat), 5);
        let msgs = json!({"system": [{"type": "text", "text": "one two"}],
                          "messages": [{"role": "user", "content": "three"}]});
        assert_eq!(count_input(&msgs), 3);
        assert_eq!(count_input(&json!({"input": [[1, 2, 3], [4]]})), 4);
        assert_eq!(count_input(&json!({"input": ["a b", "c"]})), 3);
        assert_eq!(
            count_input(&json!({"instructions": "x", "input": [{"role": "user",
                "content": [{"type": "input_text", "text": "y z"}]}]})),
            3
        );
    }

    #[test]
    fn text_is_the_tokens_in_order() {
        assert_eq!(text(0, 3), "the of and");
        assert_eq!(text(1, 2), " of");
        assert_eq!(words(&text(0, 40)), 40);
    }
}

//! Error bodies in each provider's format.

use serde_json::{Value, json};

/// Which provider's format a path speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// OpenAI: `{"error": {"message", "type", "param", "code"}}`.
    OpenAi,
    /// Anthropic: `{"type": "error", "error": {"type", "message"}, "request_id"}`.
    Anthropic,
}

impl Dialect {
    /// The dialect of a request path (`/v1/messages` is Anthropic's, the rest OpenAI's).
    pub fn of_path(path: &str) -> Dialect {
        if path.starts_with("/v1/messages") {
            Dialect::Anthropic
        } else {
            Dialect::OpenAi
        }
    }
}

/// The error type name each provider uses for an HTTP status.
pub fn error_type(d: Dialect, status: u16) -> &'static str {
    match (d, status) {
        (Dialect::OpenAi, 401) => "invalid_request_error",
        (Dialect::OpenAi, 404) => "invalid_request_error",
        (Dialect::OpenAi, 429) => "rate_limit_exceeded",
        (Dialect::OpenAi, 400..=499) => "invalid_request_error",
        (Dialect::OpenAi, _) => "server_error",
        (Dialect::Anthropic, 400) => "invalid_request_error",
        (Dialect::Anthropic, 401) => "authentication_error",
        (Dialect::Anthropic, 403) => "permission_error",
        (Dialect::Anthropic, 404) => "not_found_error",
        (Dialect::Anthropic, 413) => "request_too_large",
        (Dialect::Anthropic, 429) => "rate_limit_error",
        (Dialect::Anthropic, 529) => "overloaded_error",
        (Dialect::Anthropic, 400..=499) => "invalid_request_error",
        (Dialect::Anthropic, _) => "api_error",
    }
}

/// The body of an error response.
pub fn body(d: Dialect, status: u16, message: &str, request_id: &str) -> Value {
    let kind = error_type(d, status);
    match d {
        Dialect::OpenAi => json!({"error": {
            "message": message,
            "type": kind,
            "param": null,
            "code": if status == 401 { Value::from("invalid_api_key") } else { Value::Null },
        }}),
        Dialect::Anthropic => json!({
            "type": "error",
            "error": {"type": kind, "message": message},
            "request_id": request_id,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes() {
        let o = body(Dialect::OpenAi, 401, "bad key", "r1");
        assert_eq!(o["error"]["code"], "invalid_api_key");
        let a = body(Dialect::Anthropic, 529, "busy", "r2");
        assert_eq!(a["type"], "error");
        assert_eq!(a["error"]["type"], "overloaded_error");
        assert_eq!(Dialect::of_path("/v1/messages"), Dialect::Anthropic);
        assert_eq!(Dialect::of_path("/v1/responses"), Dialect::OpenAi);
    }
}

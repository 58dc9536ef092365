//! Per-request controls, read from `x-upstream-*` request headers (see the crate docs).

use hyper::HeaderMap;

use crate::config::Config;

/// How one request is to be answered, beyond what its body asks.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Controls {
    /// Tokens the model "wants" to produce (before the request's maximum).
    pub output_tokens: Option<u64>,
    /// Produce them all even past the request's maximum.
    pub ignore_max: bool,
    /// Report this many input tokens instead of the counted ones.
    pub input_tokens: Option<u64>,
    /// Wait before the response head.
    pub latency_ms: u64,
    /// Wait between streamed chunks.
    pub token_interval_us: u64,
    /// Output tokens per streamed delta (at least 1).
    pub tokens_per_chunk: u64,
    /// Answer with this error status, no output.
    pub fail_status: Option<u16>,
    /// Stream: send an in-stream error after this many output tokens.
    pub fail_after: Option<u64>,
    /// Stream: cut the connection after this many output tokens.
    pub drop_after: Option<u64>,
    /// Stream: go silent after this many output tokens.
    pub stall_after: Option<u64>,
}

/// A control header whose value is not what it should be.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("header {header}: {problem}")]
pub struct ControlError {
    /// The header.
    pub header: &'static str,
    /// What is wrong with its value.
    pub problem: String,
}

impl Controls {
    /// Reads the controls from `headers`, with the server's defaults.
    pub fn from_headers(headers: &HeaderMap, cfg: &Config) -> Result<Controls, ControlError> {
        let fail_status = number(headers, "x-upstream-fail-status")?;
        if let Some(s) = fail_status
            && !(400..=599).contains(&s)
        {
            return Err(ControlError {
                header: "x-upstream-fail-status",
                problem: format!("{s} is not an error status (400..=599)"),
            });
        }
        Ok(Controls {
            output_tokens: number(headers, "x-upstream-output-tokens")?,
            ignore_max: flag(headers, "x-upstream-ignore-max")?,
            input_tokens: number(headers, "x-upstream-input-tokens")?,
            latency_ms: number(headers, "x-upstream-latency-ms")?.unwrap_or(cfg.latency_ms),
            token_interval_us: number(headers, "x-upstream-token-interval-us")?
                .unwrap_or(cfg.token_interval_us),
            tokens_per_chunk: number(headers, "x-upstream-tokens-per-chunk")?
                .unwrap_or(1)
                .max(1),
            fail_status: fail_status.map(|s| s as u16),
            fail_after: number(headers, "x-upstream-fail-after")?,
            drop_after: number(headers, "x-upstream-drop-after")?,
            stall_after: number(headers, "x-upstream-stall-after")?,
        })
    }
}

fn value<'a>(
    headers: &'a HeaderMap,
    header: &'static str,
) -> Result<Option<&'a str>, ControlError> {
    match headers.get(header) {
        None => Ok(None),
        Some(v) => v
            .to_str()
            .map(|s| Some(s.trim()))
            .map_err(|_| ControlError {
                header,
                problem: "not visible ASCII".into(),
            }),
    }
}

fn number(headers: &HeaderMap, header: &'static str) -> Result<Option<u64>, ControlError> {
    value(headers, header)?
        .map(|s| {
            s.parse::<u64>().map_err(|_| ControlError {
                header,
                problem: format!("{s:?} is not a non-negative integer"),
            })
        })
        .transpose()
}

fn flag(headers: &HeaderMap, header: &'static str) -> Result<bool, ControlError> {
    match value(headers, header)? {
        None => Ok(false),
        Some("1" | "true" | "yes") => Ok(true),
        Some("0" | "false" | "no") => Ok(false),
        Some(other) => Err(ControlError {
            header,
            problem: format!("{other:?} is not true or false"),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn defaults_come_from_the_config() {
        let cfg = Config {
            latency_ms: 7,
            token_interval_us: 9,
            ..Config::default()
        };
        let c = Controls::from_headers(&HeaderMap::new(), &cfg).unwrap();
        assert_eq!(
            (c.latency_ms, c.token_interval_us, c.tokens_per_chunk),
            (7, 9, 1)
        );
        assert!(c.output_tokens.is_none() && !c.ignore_max);
    }

    #[test]
    fn headers_override_and_bad_values_are_named() {
        let cfg = Config::default();
        let c = Controls::from_headers(
            &headers(&[
                ("x-upstream-output-tokens", "40"),
                ("x-upstream-ignore-max", "true"),
                ("x-upstream-tokens-per-chunk", "0"),
            ]),
            &cfg,
        )
        .unwrap();
        assert_eq!(c.output_tokens, Some(40));
        assert!(c.ignore_max);
        assert_eq!(c.tokens_per_chunk, 1);
        let e =
            Controls::from_headers(&headers(&[("x-upstream-drop-after", "-1")]), &cfg).unwrap_err();
        assert_eq!(e.header, "x-upstream-drop-after");
        let e = Controls::from_headers(&headers(&[("x-upstream-fail-status", "200")]), &cfg)
            .unwrap_err();
        assert!(e.problem.contains("not an error status"), "{e}");
    }
}

//! # llm-upstream: a deterministic local LLM server
//!
//! Speaks the OpenAI (`POST /v1/chat/completions`, `/v1/responses`, `/v1/embeddings`) and
//! Anthropic (`POST /v1/messages`) wire formats, streaming (SSE) and not, so the official
//! SDKs and the Tollgate gateway can be tested and benchmarked against something that
//! behaves like a provider without a network.
//!
//! **The invariant:** every reply is a pure function of the request and its controls, and
//! the usage it reports is exactly what it produced: `output_tokens` equals the number of
//! output tokens sent (each a word of a fixed vocabulary that OpenAI's `cl100k_base` and
//! `o200k_base` encodings count as one token), and `input_tokens` follows the rule below.
//! What it reported and sent is kept in a journal the tests read (`GET /_upstream/requests`).
//!
//! ## Command line
//!
//! ```text
//! llm-upstream [--listen ADDR] [--port-file PATH] [--api-key KEY] [--latency-ms N]
//!              [--token-interval-us N] [--default-output-tokens N] [--threads N]
//!              [--journal N]
//! ```
//!
//! | flag | default | meaning |
//! |---|---|---|
//! | `--listen` | `127.0.0.1:0` | address to bind (port 0: any free port) |
//! | `--port-file` | none | write the bound port there (atomically) once listening |
//! | `--api-key` | none | require this key (`Authorization: Bearer` or `x-api-key`); else 401 in the provider's format |
//! | `--latency-ms` | 0 | wait before the response head (time to first byte) |
//! | `--token-interval-us` | 0 | wait between two streamed chunks |
//! | `--default-output-tokens` | 16 | reply length when neither the request nor a control sets one |
//! | `--threads` | 1 | tokio worker threads |
//! | `--journal` | 10000 | requests kept for `GET /_upstream/requests` (oldest dropped first) |
//!
//! On start it prints one line, `llm-upstream listening on http://ADDR`, on stdout.
//!
//! ## Per-request controls (request headers, so every SDK can set them with `extra_headers`)
//!
//! | header | effect |
//! |---|---|
//! | `x-upstream-output-tokens: N` | the reply the model "wants" to give has N tokens (default: the request's maximum, else `--default-output-tokens`); it is cut at the request's maximum (`finish_reason: length`, `stop_reason: max_tokens`, status `incomplete`) |
//! | `x-upstream-ignore-max: true` | produce all N tokens even past the maximum: a provider that overruns |
//! | `x-upstream-input-tokens: N` | report N input tokens instead of the counted ones |
//! | `x-upstream-latency-ms: N` | overrides `--latency-ms` |
//! | `x-upstream-token-interval-us: N` | overrides `--token-interval-us` |
//! | `x-upstream-tokens-per-chunk: K` | K output tokens per streamed delta (default 1) |
//! | `x-upstream-fail-status: S` | answer status S (400..=599) with the provider's error body, no output |
//! | `x-upstream-fail-after: N` | stream: after N output tokens send the provider's in-stream error event, then end |
//! | `x-upstream-drop-after: N` | stream: after N output tokens cut the connection (no final event) |
//! | `x-upstream-stall-after: N` | stream: after N output tokens send nothing more until the client goes away |
//!
//! The maximum is `max_completion_tokens` or `max_tokens` (chat), `max_output_tokens`
//! (responses), `max_tokens` (messages, where it is required as the real API requires it).
//!
//! ## Counting
//!
//! Input tokens: the number of whitespace-separated words in every text of the request
//! (message contents, text parts, `system`, `instructions`, `input`), plus the length of
//! every token-id array (embeddings). Output: token `i` of a reply is
//! `VOCABULARY[i % len]`, with a leading space after the first.
//!
//! ## Streams
//!
//! - Chat: `chat.completion.chunk`s, a role chunk first, one content chunk per delta, a
//!   final chunk with `finish_reason`, then (with `stream_options.include_usage`) a chunk
//!   with `choices: []` and `usage`, and every other chunk carries `usage: null`; then
//!   `data: [DONE]`. In-stream error: `data: {"error": {...}}`.
//! - Responses: `event:`-named events with `sequence_number` from 0: `response.created`,
//!   `response.in_progress`, `response.output_item.added`, `response.content_part.added`,
//!   `response.output_text.delta`..., `response.output_text.done`,
//!   `response.content_part.done`, `response.output_item.done`, then `response.completed`
//!   (or `response.incomplete` when cut at `max_output_tokens`) with the usage. In-stream
//!   error: `event: error`.
//! - Messages: `message_start` (usage with the input tokens and `output_tokens: 1`),
//!   `content_block_start`, `ping`, `content_block_delta`..., `content_block_stop`,
//!   `message_delta` (stop reason and the cumulative `output_tokens`), `message_stop`.
//!   In-stream error: `event: error` with an `overloaded_error`.
//!
//! ## Introspection
//!
//! `GET /_upstream/requests` (the journal, oldest first, as JSON), `GET /_upstream/stats`
//! (totals), `POST /_upstream/reset` (clears both), `GET /healthz`.
//!
//! ## As a library
//!
//! [`start`] binds and serves in the current tokio runtime and returns a [`Running`] with
//! the address and the journal, for Rust integration tests.

pub mod anthropic;
pub mod config;
pub mod controls;
pub mod errors;
pub mod journal;
pub mod openai;
pub mod reply;
pub mod server;
pub mod sse;

pub use config::Config;
pub use journal::{Journal, Outcome, Record};
pub use server::{Running, start};

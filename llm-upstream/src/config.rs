//! The server's settings: the command line, also built directly by tests.

use std::net::SocketAddr;
use std::path::PathBuf;

/// Settings of one server (see the crate docs for what each means).
#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "llm-upstream",
    version,
    about = "A deterministic local LLM server speaking the OpenAI and Anthropic wire formats",
    long_about = "A deterministic local LLM server speaking the OpenAI (/v1/chat/completions, \
        /v1/responses, /v1/embeddings) and Anthropic (/v1/messages) wire formats, streaming and \
        not, reporting exact usage. Per-request behaviour is set with x-upstream-* request \
        headers (see the crate docs: output length, overruns, latency, failures, stalls)."
)]
pub struct Config {
    /// Address to bind; port 0 picks a free port.
    #[arg(long, default_value = "127.0.0.1:0")]
    pub listen: SocketAddr,
    /// Write the bound port to this file once listening (written to a temporary file and
    /// renamed, so a reader never sees a partial number).
    #[arg(long)]
    pub port_file: Option<PathBuf>,
    /// Require this API key (as `Authorization: Bearer KEY` or `x-api-key: KEY`); without
    /// it every key is accepted.
    #[arg(long)]
    pub api_key: Option<String>,
    /// Wait this long before the response head (time to first byte).
    #[arg(long, default_value_t = 0)]
    pub latency_ms: u64,
    /// Wait this long between two streamed chunks.
    #[arg(long, default_value_t = 0)]
    pub token_interval_us: u64,
    /// Reply length when neither the request's maximum nor a control sets one.
    #[arg(long, default_value_t = 16)]
    pub default_output_tokens: u64,
    /// Tokio worker threads.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub threads: u16,
    /// Requests kept in the journal (`GET /_upstream/requests`); the oldest go first.
    #[arg(long, default_value_t = 10_000)]
    pub journal: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            port_file: None,
            api_key: None,
            latency_ms: 0,
            token_interval_us: 0,
            default_output_tokens: 16,
            threads: 1,
            journal: 10_000,
        }
    }
}

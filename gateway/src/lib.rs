//! # tollgate-gateway: zero-code enforcement over HTTP
//!
//! `tollgate gateway` runs in the pod beside the sidecar, attaches to the pod's region
//! like any agent, and speaks OpenAI's `POST /v1/chat/completions`, `/v1/responses` and
//! `/v1/embeddings` and Anthropic's `POST /v1/messages`, streamed (SSE) and not. An agent in any language gets pre-call
//! enforcement by changing its base URL and using a gateway key as its API key.
//!
//! For every call it:
//! 1. maps the caller's key to a tenant, agent, feature, tier and initiator
//!    ([`config`]; an unknown key is a 401 in the provider's format);
//! 2. reserves in the region for the model, the estimated input ([`estimate`]) and the
//!    request's maximum output (a configured default when absent, then also sent
//!    upstream), clamping the maximum to what the budget pays when the key allows it
//!    (`tollgate-clamped-max-tokens`); a denial is a 429 with `Retry-After` naming the limit;
//! 3. forwards to the model's upstream with the upstream's own key (the caller's is
//!    never forwarded unless configured);
//! 4. commits the usage the provider reports ([`api`]): the `usage` object, OpenAI's
//!    final usage chunk (the gateway sets `stream_options.include_usage` and drops the
//!    chunk if the caller did not ask for it), Anthropic's `message_start` and
//!    `message_delta`. A stream whose output reaches what the reservation covers is ended
//!    by the gateway with the events the SDKs expect at a length stop.
//!
//! With a `[degrade]` rule ([`degrade`]), calls of lower tiers are routed to a cheaper
//! model, or refused, while the authority projects the tenant's balance to run out within
//! a horizon. Each worker thread is a single-threaded runtime, so a call is reserved and
//! committed on one thread ([`server::Gateway`]).
//!
//! Without a final usage (client gone, upstream failed, stream cut) it commits the input
//! the provider reported (else the estimate) and the whole reserved output: the provider
//! may have generated more than was forwarded. A provider's error status is not billed
//! (cancelled); a connection refused before sending is cancelled, any other transport
//! failure is committed at the estimate. See `docs/gateway.md`.

pub mod api;
pub mod budget;
pub mod cli;
pub mod config;
pub mod degrade;
pub mod estimate;
pub mod server;
pub mod sse;

//! tollgate-injector: the Kubernetes mutating admission webhook behind `tollgate injector`.
//!
//! The invariant: a pod created with the annotation `tollgate.dev/inject: "true"` (outside
//! the namespaces the injector is told to skip, and without the opt-out label
//! `tollgate.dev/inject: "false"`) is either admitted with exactly one Tollgate sidecar and
//! the region shared with every app container, or refused with a message that says why; it
//! is never admitted unmetered by this webhook, and never injected twice.
//!
//! - [`webhook`] decides per AdmissionReview: skip (not a pod creation, opted out, skipped
//!   namespace), inject, top up (already injected: only app containers added since get the
//!   region), or deny (malformed pod, bad override). The chart
//!   registers it with `failurePolicy: Fail` (see the module docs for the trade-off).
//! - [`inject`] builds the RFC 6902 JSON Patch: the sidecar as a native sidecar (an init
//!   container with `restartPolicy: Always` and a startup probe on `/readyz`), the in-memory
//!   emptyDir at [`names::REGION_DIR`] shared with every app container, `TOLLGATE_REGION`.
//! - [`settings`] holds the sidecar's settings and the `config.tollgate.dev/<key>` overrides,
//!   validated; [`quantity`] parses Kubernetes quantities exactly.
//! - [`admission`] is the AdmissionReview envelope; [`server`] the HTTPS server (hyper and
//!   rustls with the ring provider); [`tls`] loads and hot-reloads the certificate;
//!   [`metrics`] counts what it did (`GET /metrics`); [`config`] holds the flags and the
//!   validated configuration they make; [`cli`] runs `tollgate injector`.
#![forbid(unsafe_code)]

pub mod admission;
pub mod cli;
pub mod config;
pub mod inject;
pub mod metrics;
pub mod names;
pub mod quantity;
pub mod server;
pub mod settings;
pub mod tls;
pub mod webhook;

pub use admission::{BadReview, Verdict};
pub use config::InjectorConfig;
pub use settings::SidecarSettings;
pub use webhook::Injector;

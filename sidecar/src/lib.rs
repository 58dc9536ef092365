//! tollgate-sidecar (placeholder: being built).

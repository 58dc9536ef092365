//! tollgate-client (placeholder: being built).

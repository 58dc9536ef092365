//! tollgate-proto (placeholder: being built).

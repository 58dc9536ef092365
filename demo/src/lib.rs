//! tollgate-demo (placeholder: being built).

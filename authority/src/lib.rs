//! tollgate-authority (placeholder: being built).

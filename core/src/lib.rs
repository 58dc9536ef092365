//! tollgate-core (placeholder: being built).

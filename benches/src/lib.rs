//! tollgate-benches (placeholder: being built).

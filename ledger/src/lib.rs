//! tollgate-ledger (placeholder: being built).

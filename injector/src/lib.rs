//! tollgate-injector (placeholder: being built).

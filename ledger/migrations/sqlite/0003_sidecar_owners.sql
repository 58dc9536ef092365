-- Version 3: each sidecar id belongs to the credential that registered it first
-- (tollgate-authority's `policy_store`), so a sidecar of another credential (or tenant)
-- can never take over an id and have its batches or holds stand in for the real ones.
CREATE TABLE IF NOT EXISTS tollgate_authority_sidecar_owners (
    sidecar_id        TEXT PRIMARY KEY,
    credential        TEXT NOT NULL,
    tenants           TEXT NOT NULL,   -- comma-separated, as first registered
    registered_at_ms  INTEGER NOT NULL
);

-- Version 4 (the twin of sqlite/0003_sidecar_owners.sql): each sidecar id belongs to the
-- credential that registered it first (tollgate-authority's `policy_store`), so a sidecar
-- of another credential (or tenant) can never take over an id and have its batches or
-- holds stand in for the real ones. Claimed with one INSERT ... ON CONFLICT DO NOTHING,
-- so replicas agree on the owner.
CREATE TABLE tollgate_authority_sidecar_owners (
    sidecar_id        TEXT COLLATE "C" PRIMARY KEY,
    credential        TEXT NOT NULL,
    tenants           TEXT NOT NULL,   -- comma-separated, as first registered
    registered_at_ms  BIGINT NOT NULL
);

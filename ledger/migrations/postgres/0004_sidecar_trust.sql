-- Version 4 (the twin of sqlite/0003_sidecar_trust.sql): what the authority (its
-- `policy_store`) trusts a sidecar with. Each sidecar id belongs to the credential that
-- registered it first, so a sidecar of another credential (or tenant) can never take over
-- an id and have its batches or holds stand in for the real ones. Claimed with one
-- INSERT ... ON CONFLICT DO NOTHING, so replicas agree on the owner.
CREATE TABLE tollgate_authority_sidecar_owners (
    sidecar_id        TEXT COLLATE "C" PRIMARY KEY,
    credential        TEXT NOT NULL,
    tenants           TEXT NOT NULL,   -- comma-separated, as first registered
    registered_at_ms  BIGINT NOT NULL
);

-- Every lease the authority granted and has not ended, so that after a restart a
-- re-registering sidecar is believed only for leases granted to it (never for a lease id,
-- amount or expiry of its own making). `lease` is the protobuf `Lease` as granted.
CREATE TABLE tollgate_authority_leases (
    sidecar_id  TEXT COLLATE "C" NOT NULL,
    lease_id    TEXT COLLATE "C" NOT NULL,
    lease       BYTEA NOT NULL,
    expires_ms  BIGINT NOT NULL,
    PRIMARY KEY (sidecar_id, lease_id)
);
CREATE INDEX tollgate_authority_leases_expiry ON tollgate_authority_leases (expires_ms);

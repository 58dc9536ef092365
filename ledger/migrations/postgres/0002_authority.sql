-- Version 2: the tables tollgate-authority keeps beside the ledger (its `policy_store`
-- module), so that every replica on this database sees the same policies, alert rules,
-- sidecar hints and window-quota claims. On SQLite the authority creates the same tables
-- itself (one process owns an SQLite file). Values are protobuf-encoded so a new policy
-- field needs no schema change.

-- A tenant's quota rules, tier floors and defaults. `version` rises by one at every change
-- and is compared-and-set, so two replicas changing one tenant at once never lose an
-- update; replicas poll it to push changes made elsewhere to their own sessions.
CREATE TABLE tollgate_authority_policy (
    tenant   TEXT COLLATE "C" PRIMARY KEY,
    policy   BYTEA NOT NULL,
    version  BIGINT NOT NULL DEFAULT 0
);

CREATE TABLE tollgate_authority_alert_rules (
    tenant   TEXT COLLATE "C" NOT NULL,
    rule_id  TEXT COLLATE "C" NOT NULL,
    rule     BYTEA NOT NULL,
    PRIMARY KEY (tenant, rule_id)
);

CREATE TABLE tollgate_authority_tenants (
    tenant        TEXT COLLATE "C" PRIMARY KEY,
    display_name  TEXT NOT NULL
);

-- Per sidecar: the highest batch sequence known durable (a hint; Register probes the
-- ledger forward from it).
CREATE TABLE tollgate_authority_sidecars (
    sidecar_id   TEXT COLLATE "C" PRIMARY KEY,
    durable_seq  BIGINT NOT NULL
);

-- Window quotas: what has been leased out of each window (granted minus handed back),
-- fleet-wide. A grant is one conditional UPDATE of this row (claimed + g <= max), so
-- replicas granting at once serialize on the row lock and never pass the window's max.
CREATE TABLE tollgate_authority_windows (
    tenant           TEXT COLLATE "C" NOT NULL,
    rule_id          TEXT COLLATE "C" NOT NULL,
    window_start_ms  BIGINT NOT NULL,
    window_end_ms    BIGINT NOT NULL,
    claimed          BIGINT NOT NULL,
    last_claim       BIGINT NOT NULL,
    PRIMARY KEY (tenant, rule_id, window_start_ms)
);
CREATE INDEX tollgate_authority_windows_end ON tollgate_authority_windows (window_end_ms);

-- Alert webhooks waiting for delivery (at least once, by any replica): a replica claims
-- due rows for a while (`claimed_until_ms`, with FOR UPDATE SKIP LOCKED, so two replicas
-- do not send one at once), deletes a row once delivered, or pushes `next_at_ms` back.
CREATE TABLE tollgate_authority_webhooks (
    delivery          TEXT COLLATE "C" PRIMARY KEY,
    url               TEXT NOT NULL,
    body              BYTEA NOT NULL,
    secret            BYTEA NOT NULL,   -- the rule's own HMAC key; empty: the global one
    attempts          INTEGER NOT NULL,
    next_at_ms        BIGINT NOT NULL,
    claimed_until_ms  BIGINT NOT NULL
);
CREATE INDEX tollgate_authority_webhooks_due ON tollgate_authority_webhooks (next_at_ms);

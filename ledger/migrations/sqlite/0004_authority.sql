-- Version 4 (the twin of postgres/0002_authority.sql): the tables tollgate-authority keeps
-- beside the ledger (its `policy_store` module): policies, alert rules, display names,
-- durable-batch hints, window-quota claims and queued webhooks. `IF NOT EXISTS`: files
-- made before this version got these tables from the authority itself when it opened them
-- (the oldest of those lack the policy's `version` column; the authority adds it).

-- A tenant's quota rules, tier floors and defaults (protobuf); `version` rises by one at
-- every change and is compared-and-set.
CREATE TABLE IF NOT EXISTS tollgate_authority_policy (
    tenant   TEXT PRIMARY KEY,
    policy   BLOB NOT NULL,
    version  INTEGER NOT NULL DEFAULT 0
);

CREATE TABLE IF NOT EXISTS tollgate_authority_alert_rules (
    tenant   TEXT NOT NULL,
    rule_id  TEXT NOT NULL,
    rule     BLOB NOT NULL,
    PRIMARY KEY (tenant, rule_id)
);

CREATE TABLE IF NOT EXISTS tollgate_authority_tenants (
    tenant        TEXT PRIMARY KEY,
    display_name  TEXT NOT NULL
);

-- Per sidecar: the highest batch sequence known durable (a hint).
CREATE TABLE IF NOT EXISTS tollgate_authority_sidecars (
    sidecar_id   TEXT PRIMARY KEY,
    durable_seq  INTEGER NOT NULL
);

-- Window quotas: what has been leased out of each window (granted minus handed back).
CREATE TABLE IF NOT EXISTS tollgate_authority_windows (
    tenant           TEXT NOT NULL,
    rule_id          TEXT NOT NULL,
    window_start_ms  INTEGER NOT NULL,
    window_end_ms    INTEGER NOT NULL,
    claimed          INTEGER NOT NULL,
    last_claim       INTEGER NOT NULL,
    PRIMARY KEY (tenant, rule_id, window_start_ms)
);
CREATE INDEX IF NOT EXISTS tollgate_authority_windows_end ON tollgate_authority_windows (window_end_ms);

-- Alert webhooks waiting for delivery (at least once).
CREATE TABLE IF NOT EXISTS tollgate_authority_webhooks (
    delivery          TEXT PRIMARY KEY,
    url               TEXT NOT NULL,
    body              BLOB NOT NULL,
    secret            BLOB NOT NULL,   -- the rule's own HMAC key; empty: the global one
    attempts          INTEGER NOT NULL,
    next_at_ms        INTEGER NOT NULL,
    claimed_until_ms  INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS tollgate_authority_webhooks_due ON tollgate_authority_webhooks (next_at_ms);

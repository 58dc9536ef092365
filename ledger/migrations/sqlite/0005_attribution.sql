-- Version 5 (the twin of postgres/0005_attribution.sql): attribution reaches the ledger.
-- Postings carry the agent's name (`agent`), its instance (`agent_instance`, which is what
-- `agent` held before: rows written earlier get it moved there and an empty name), the
-- task, the Agentic Work Units and the request units of per-request prices (on
-- plan-funded rows exactly what the period's plan usage took, so a month's bill can be
-- recomputed from its postings; rows written before this version have none).
ALTER TABLE postings ADD COLUMN agent_instance TEXT NOT NULL DEFAULT '';
ALTER TABLE postings ADD COLUMN task TEXT NOT NULL DEFAULT '';
ALTER TABLE postings ADD COLUMN work_units BIGINT NOT NULL DEFAULT 0;
ALTER TABLE postings ADD COLUMN request_units_milli BIGINT NOT NULL DEFAULT 0;
UPDATE postings SET agent_instance = agent, agent = '';

-- Tasks: terms set by the first registration (NULL until one arrives), counters moved
-- with the postings that name the task (in the same transaction).
CREATE TABLE tasks (
    tenant        TEXT NOT NULL,
    task          TEXT NOT NULL,
    budget        BIGINT,
    max_calls     BIGINT,
    opened_at     BIGINT,
    first_at      BIGINT NOT NULL,
    last_at       BIGINT NOT NULL,
    spent         BIGINT NOT NULL,
    calls         BIGINT NOT NULL,
    work_units    BIGINT NOT NULL,
    completed_at  BIGINT,
    conflicts     BIGINT NOT NULL,
    PRIMARY KEY (tenant, task)
);
CREATE INDEX tasks_recent ON tasks (tenant, last_at);

-- The authority's (its `policy_store`): calls sidecars report denied
-- (`DemandReport.denials`), counted per tenant, binding limit, tier and minute, for the
-- dashboards (`RecentDenials`). `limit_key` is the canonical text of the limit ("" when
-- the lane ran dry before a limit was named), `limit_pb` the protobuf `LimitKey`.
CREATE TABLE tollgate_authority_denials (
    tenant      TEXT NOT NULL,
    limit_key   TEXT NOT NULL,
    limit_pb    BLOB NOT NULL,
    tier        INTEGER NOT NULL,
    minute_ms   INTEGER NOT NULL,
    count       INTEGER NOT NULL,
    PRIMARY KEY (tenant, limit_key, tier, minute_ms)
);
CREATE INDEX tollgate_authority_denials_minute ON tollgate_authority_denials (minute_ms);

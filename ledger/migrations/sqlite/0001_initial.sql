-- tollgate-ledger schema, version 1.
-- Portable SQL (SQLite and PostgreSQL): BIGINT amounts in micro-credits, unix-second
-- times, TEXT for ids, enums and small JSON documents. No AUTOINCREMENT, no dialect
-- functions: the PostgreSQL twin differs only where noted.

-- One row per tenant: configuration, id counters, totals, the billing period and the
-- audit chain head. Every write transaction locks this row first
-- (PostgreSQL: SELECT ... FOR UPDATE).
CREATE TABLE wallets (
    tenant              TEXT PRIMARY KEY,
    config              TEXT NOT NULL,
    created_at          BIGINT NOT NULL,
    next_grant_id       BIGINT NOT NULL,
    next_hold_id        BIGINT NOT NULL,
    granted             BIGINT NOT NULL,
    available           BIGINT NOT NULL,
    held                BIGINT NOT NULL,
    consumed            BIGINT NOT NULL,
    expired             BIGINT NOT NULL,
    plan_held           BIGINT NOT NULL,
    plan_consumed       BIGINT NOT NULL,
    overrun             BIGINT NOT NULL,
    period_start        BIGINT NOT NULL,
    period_spent        BIGINT NOT NULL,
    period_metered      BIGINT NOT NULL,
    period_request_milli BIGINT NOT NULL,
    price_book_version  BIGINT,
    alert_state         TEXT NOT NULL,
    audit_seq           BIGINT NOT NULL,
    audit_hash          TEXT NOT NULL
);

CREATE TABLE grants (
    tenant          TEXT NOT NULL,
    id              BIGINT NOT NULL,
    kind            TEXT NOT NULL,
    amount          BIGINT NOT NULL,
    priority        BIGINT NOT NULL,
    starts_at       BIGINT NOT NULL,
    expires_at      BIGINT,
    reset_period    TEXT,
    reference       TEXT,
    created_at      BIGINT NOT NULL,
    period          BIGINT NOT NULL,
    period_start    BIGINT NOT NULL,
    next_reset_at   BIGINT,
    granted         BIGINT NOT NULL,
    available       BIGINT NOT NULL,
    held            BIGINT NOT NULL,
    consumed        BIGINT NOT NULL,
    expired         BIGINT NOT NULL,
    closed          SMALLINT NOT NULL,
    PRIMARY KEY (tenant, id)
);
CREATE UNIQUE INDEX grants_reference ON grants (tenant, reference);
CREATE INDEX grants_active ON grants (tenant, closed, held);
CREATE INDEX grants_due_reset ON grants (closed, next_reset_at);
CREATE INDEX grants_due_expiry ON grants (closed, expires_at);

-- Holds: terms never change; status, drawn and released change as it is used and ends.
CREATE TABLE holds (
    tenant      TEXT NOT NULL,
    id          BIGINT NOT NULL,
    owner       TEXT NOT NULL,
    amount      BIGINT NOT NULL,
    drawn       BIGINT NOT NULL,
    released    BIGINT NOT NULL,
    status      TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    expires_at  BIGINT NOT NULL,
    closed_at   BIGINT,
    parts       TEXT NOT NULL,
    PRIMARY KEY (tenant, id)
);
CREATE INDEX holds_owner ON holds (tenant, owner, status);
CREATE INDEX holds_due ON holds (status, expires_at);

-- One row per usage batch, whatever its size: the idempotency key and the outcome.
CREATE TABLE batches (
    sidecar_id  TEXT NOT NULL,
    seq         BIGINT NOT NULL,
    posted_at   BIGINT NOT NULL,
    records     BIGINT NOT NULL,
    outcome     TEXT NOT NULL,
    digest      TEXT,
    signature   TEXT,
    PRIMARY KEY (sidecar_id, seq)
);

-- Aggregated postings: one row per (batch, tenant, agent, model, feature, source).
-- (PostgreSQL: add an identity column as the primary key; SQLite uses its rowid.)
CREATE TABLE postings (
    tenant          TEXT NOT NULL,
    at              BIGINT NOT NULL,
    batch_sidecar   TEXT,
    batch_seq       BIGINT,
    hold_id         BIGINT,
    agent           TEXT NOT NULL,
    model           TEXT NOT NULL,
    feature         TEXT NOT NULL,
    funding         TEXT NOT NULL,
    grant_id        BIGINT,
    amount          BIGINT NOT NULL,
    records         BIGINT NOT NULL,
    input_tokens    BIGINT NOT NULL,
    output_tokens   BIGINT NOT NULL,
    outcomes        BIGINT NOT NULL,
    balance_before  BIGINT NOT NULL,
    balance_after   BIGINT NOT NULL
);
CREATE INDEX postings_tenant_at ON postings (tenant, at);

-- Per-tenant audit chains.
CREATE TABLE audit_records (
    tenant      TEXT NOT NULL,
    seq         BIGINT NOT NULL,
    at          BIGINT NOT NULL,
    prev_hash   TEXT NOT NULL,
    body        TEXT NOT NULL,
    hash        TEXT NOT NULL,
    signature   TEXT NOT NULL,
    PRIMARY KEY (tenant, seq)
);

-- Spend per tenant per minute, for burn rates.
CREATE TABLE spend_minutes (
    tenant  TEXT NOT NULL,
    minute  BIGINT NOT NULL,
    amount  BIGINT NOT NULL,
    PRIMARY KEY (tenant, minute)
);

CREATE TABLE price_books (
    tenant      TEXT NOT NULL,
    version     BIGINT NOT NULL,
    book        TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    PRIMARY KEY (tenant, version)
);

-- tollgate-ledger schema for PostgreSQL, version 1: the twin of
-- migrations/sqlite/0001_initial.sql (same tables, columns and keys).
--
-- Differences from SQLite, and why:
-- * Text keys are COLLATE "C": tenants are locked in tenant-id order (byte order, the
--   order the ledger sorts them in), whatever the database's default collation is, so
--   ordering in SQL and in Rust agree and concurrent writers never deadlock.
-- * postings has an identity primary key (SQLite uses its rowid) for posting order.
-- * No dialect features beyond identity columns: the same DDL is accepted by
--   YugabyteDB (YSQL) and, on paper, CockroachDB (see docs/scaling.md).

-- One row per tenant: configuration, id counters, totals, the billing period and the
-- audit chain head. Every write transaction locks this row first (SELECT ... FOR UPDATE,
-- in tenant order): it serializes writers of one tenant across authority replicas.
CREATE TABLE wallets (
    tenant              TEXT COLLATE "C" PRIMARY KEY,
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
    tenant          TEXT COLLATE "C" NOT NULL,
    id              BIGINT NOT NULL,
    kind            TEXT NOT NULL,
    amount          BIGINT NOT NULL,
    priority        BIGINT NOT NULL,
    starts_at       BIGINT NOT NULL,
    expires_at      BIGINT,
    reset_period    TEXT,
    reference       TEXT COLLATE "C",
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
    tenant      TEXT COLLATE "C" NOT NULL,
    id          BIGINT NOT NULL,
    owner       TEXT COLLATE "C" NOT NULL,
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

-- One row per usage batch, whatever its size. The primary key is the idempotency key:
-- whatever happens above it, a (sidecar, seq) can be committed once.
CREATE TABLE batches (
    sidecar_id  TEXT COLLATE "C" NOT NULL,
    seq         BIGINT NOT NULL,
    posted_at   BIGINT NOT NULL,
    records     BIGINT NOT NULL,
    outcome     TEXT NOT NULL,
    digest      TEXT,
    signature   TEXT,
    PRIMARY KEY (sidecar_id, seq)
);

-- Aggregated postings: one row per (batch, tenant, agent, model, feature, source).
CREATE TABLE postings (
    id              BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant          TEXT COLLATE "C" NOT NULL,
    at              BIGINT NOT NULL,
    batch_sidecar   TEXT COLLATE "C",
    batch_seq       BIGINT,
    hold_id         BIGINT,
    agent           TEXT COLLATE "C" NOT NULL,
    model           TEXT COLLATE "C" NOT NULL,
    feature         TEXT COLLATE "C" NOT NULL,
    funding         TEXT COLLATE "C" NOT NULL,
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
    tenant      TEXT COLLATE "C" NOT NULL,
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
    tenant  TEXT COLLATE "C" NOT NULL,
    minute  BIGINT NOT NULL,
    amount  BIGINT NOT NULL,
    PRIMARY KEY (tenant, minute)
);

CREATE TABLE price_books (
    tenant      TEXT COLLATE "C" NOT NULL,
    version     BIGINT NOT NULL,
    book        TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    PRIMARY KEY (tenant, version)
);

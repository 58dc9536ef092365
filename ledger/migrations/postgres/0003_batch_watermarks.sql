-- Version 3: batch-key retention (the twin of sqlite/0002_batch_watermarks.sql). Old rows
-- of `batches` are pruned; per sidecar the highest sequence pruned stays, and a batch at
-- or below it is a duplicate, never posted again.
CREATE TABLE batch_watermarks (
    sidecar_id      TEXT COLLATE "C" PRIMARY KEY,
    pruned_through  BIGINT NOT NULL,
    pruned_at       BIGINT NOT NULL
);
CREATE INDEX batches_posted_at ON batches (posted_at);

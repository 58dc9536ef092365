-- Version 2: batch-key retention. Old rows of `batches` are pruned (their outcome is no
-- longer needed once no sidecar can re-send them); what stays is, per sidecar, the
-- highest sequence pruned: a batch at or below it is a duplicate, never posted again.
CREATE TABLE batch_watermarks (
    sidecar_id      TEXT PRIMARY KEY,
    pruned_through  BIGINT NOT NULL,
    pruned_at       BIGINT NOT NULL
);
CREATE INDEX batches_posted_at ON batches (posted_at);

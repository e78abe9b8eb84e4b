-- Indexer tuning (DESIGN.md section 6). No semantic change to 0001's tables.

-- index_head (one row) and index_checkpoints (one row per partition) are updated by every
-- indexer transaction, tens of times a second. Free space on their pages lets every update be
-- HOT (heap-only: no index entry, pruned in place) instead of growing the table and its primary
-- key between autovacuum runs.
ALTER TABLE index_head SET (fillfactor = 10);
ALTER TABLE index_checkpoints SET (fillfactor = 50);
ALTER TABLE subscription_checkpoints SET (fillfactor = 50);

-- Stream reads with min_version ask for the highest indexed version of one stream: the unique
-- (stream_id, version) index answers it with a backward scan; nothing to add.

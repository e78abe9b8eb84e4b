-- Payload digests in the commit marker (DESIGN.md section 5: idempotency).

-- One digest per event id, in the order of event_ids: BLAKE2b-128 of the event's type, content
-- type, metadata and payload (writer.prepare.payload_digest). An append that repeats committed
-- ids at their positions is answered idempotently only when every digest matches; another
-- payload under a committed id is refused (409 duplicate_event_id, "payload_differs").
-- Markers written before this migration have NULL here and keep the position-only rule.
ALTER TABLE appends ADD COLUMN digests bytea[];

-- NOT VALID: rows written before this migration are not scanned (they are NULL anyway); every
-- new marker is checked.
ALTER TABLE appends ADD CONSTRAINT appends_digests_per_event
    CHECK (digests IS NULL OR cardinality(digests) = cardinality(event_ids)) NOT VALID;

-- Stream ACLs are enforced from a per-process cache of the API (kafkastore/streamacl.py).
-- Every change to a stream's metadata (where its ACL lives: streams.metadata->'acl') sends
-- NOTIFY kafkastore_stream_acl with the stream id, in the transaction of the change, so the
-- caches drop their entry as the change commits. An empty payload (TRUNCATE) means every stream.
-- A hard delete keeps the metadata: authorisation of a tombstoned stream sees its last ACL.
-- Appends never set streams.metadata, so the trigger is not even considered for them.

CREATE FUNCTION stream_acl_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'TRUNCATE' THEN
        PERFORM pg_notify('kafkastore_stream_acl', '');
    ELSE
        PERFORM pg_notify('kafkastore_stream_acl', OLD.stream_id);
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER streams_metadata_changed AFTER UPDATE OF metadata ON streams
    FOR EACH ROW WHEN (OLD.metadata IS DISTINCT FROM NEW.metadata)
    EXECUTE FUNCTION stream_acl_changed();
CREATE TRIGGER streams_removed AFTER DELETE ON streams
    FOR EACH ROW WHEN (OLD.metadata IS NOT NULL)
    EXECUTE FUNCTION stream_acl_changed();
CREATE TRIGGER streams_truncated AFTER TRUNCATE ON streams
    FOR EACH STATEMENT EXECUTE FUNCTION stream_acl_changed();

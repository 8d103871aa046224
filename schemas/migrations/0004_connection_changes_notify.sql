-- 0004: workers hear at once when a connection changes.
--
-- The executor keeps a connection's tokens for a few seconds between calls. When a connection is
-- disabled, reconnected, given new credentials or deleted (API, apply), or another worker
-- refreshes its tokens, this trigger tells every worker listening on hookflow_connections which
-- "<tenant id>/<connector>" changed, so that none goes on using what it kept. Notifications are
-- sent on commit, and one per payload per transaction.

CREATE FUNCTION hookflow_connection_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP <> 'INSERT' THEN
        PERFORM pg_notify('hookflow_connections', OLD.tenant_id::text || '/' || OLD.connector);
    END IF;
    IF TG_OP <> 'DELETE' THEN
        PERFORM pg_notify('hookflow_connections', NEW.tenant_id::text || '/' || NEW.connector);
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER connections_changed AFTER INSERT OR UPDATE OR DELETE ON connections
    FOR EACH ROW EXECUTE FUNCTION hookflow_connection_changed();

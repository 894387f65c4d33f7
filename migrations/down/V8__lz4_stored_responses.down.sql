-- Undoes V8__lz4_stored_responses.sql: the three columns back to the
-- server's default_toast_compression (pglz unless configured otherwise).
-- Valid whether or not V8 could set lz4. Like V8, only new values are
-- affected: values already written with lz4 stay lz4 (still readable by a
-- server built with lz4).
ALTER TABLE idempotency_keys ALTER COLUMN response SET COMPRESSION DEFAULT;
ALTER TABLE audit_events ALTER COLUMN before SET COMPRESSION DEFAULT;
ALTER TABLE audit_events ALTER COLUMN after SET COMPRESSION DEFAULT;

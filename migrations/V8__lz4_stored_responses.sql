-- A BatchCreateJobs of 1,000 jobs stores its whole response (about 1 MB of
-- JSON) for its request_id, and every audit event carries snapshots: TOAST
-- compressed them with pglz, 30-48 ms of such a call's ~125 ms in
-- PostgreSQL. lz4 compresses several times faster. Only new values are
-- written with it; a server built without lz4 keeps pglz.
DO $$
BEGIN
    ALTER TABLE idempotency_keys ALTER COLUMN response SET COMPRESSION lz4;
    ALTER TABLE audit_events ALTER COLUMN before SET COMPRESSION lz4;
    ALTER TABLE audit_events ALTER COLUMN after SET COMPRESSION lz4;
EXCEPTION WHEN feature_not_supported THEN
    RAISE NOTICE 'lz4 is not available in this PostgreSQL build: TOAST keeps pglz';
END
$$;

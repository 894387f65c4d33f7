-- One-time set-up of a bi-data database by a superuser (or the DBA), before
-- `bi-data migrate`. scripts/dev-env.sh runs it for every local database.
--
-- 1. pg_trgm, so migrations (run as the database owner) never create it.
-- 2. The trigram match operator marked LEAKPROOF. Under row-level security
--    PostgreSQL evaluates a caller's condition only after the tenant policy
--    unless its function is leakproof, so it can never be an index
--    condition: without this, SearchCompanies (name_key % $q) scans every
--    company of every tenant. similarity_op compares two texts and returns
--    a boolean; it raises no error that depends on the data, which is what
--    LEAKPROOF asserts. Only a superuser may set it; the service works
--    without it, only slower, and says so once at start.
-- 2b. For the same reason, the full-text match (tsvector @@ tsquery:
--    SearchJobs, SearchDocuments) and the jsonb containment and key tests
--    (`metadata.key = v`, `metadata:key` filters) marked LEAKPROOF, so their
--    GIN indexes apply under row-level security. Each compares its two
--    arguments and returns a boolean, raising no error that depends on a
--    row's data. Measured over 100,000 documents of one tenant: a word in
--    14 % of them ranks in 214 ms instead of 1,025 ms (a scan of every row).
-- 3. pg_stat_statements, read by AnalyticsService.GetQueryStats. Its rows
--    exist only when the server preloads it (shared_preload_libraries, a
--    restart: scripts/dev-env.sh does both on a cluster it controls); without
--    that the view errors and GetQueryStats reports the extension missing.
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS pg_trgm;
ALTER FUNCTION similarity_op(text, text) LEAKPROOF;
ALTER FUNCTION ts_match_vq(tsvector, tsquery) LEAKPROOF;
ALTER FUNCTION jsonb_contains(jsonb, jsonb) LEAKPROOF;
ALTER FUNCTION jsonb_exists(jsonb, text) LEAKPROOF;
CREATE EXTENSION IF NOT EXISTS pg_stat_statements;

-- Undoes V1__foundation.sql: the tables of V1 (their policies, indexes and
-- grants go with them), app_tenant() and the grants on the schema and on
-- refinery's history table.
--
-- Left in place on purpose, because V1 does not own them:
--   * the role bi_data_app and its membership grant: roles belong to the
--     cluster, not the database (other databases of the cluster use them),
--     and V1 creates the role only when it is missing;
--   * pg_trgm: created before any migration by the superuser step
--     (deploy/postgres/superuser.sql, which also marks its operator
--     LEAKPROOF); V1 only makes sure it exists.
-- No CASCADE anywhere: an object this file does not know about that still
-- depends on one of these makes the step fail instead of vanishing.

REVOKE SELECT ON refinery_schema_history FROM bi_data_app;
REVOKE USAGE ON SCHEMA public FROM bi_data_app;

DROP TABLE audit_events, idempotency_keys, ingest_runs, employer_responses, applications, jobs;

DROP FUNCTION app_tenant();

-- Undoes V4__analytics.sql: the three jobs indexes as V1 created them
-- (same names and key columns, without the INCLUDEd columns). Like V4,
-- plain CREATE INDEX: it holds a write lock on jobs while it builds.
DROP INDEX jobs_industry_idx;
CREATE INDEX jobs_industry_idx ON jobs (tenant_id, industry);
DROP INDEX jobs_posting_time_idx;
CREATE INDEX jobs_posting_time_idx ON jobs (tenant_id, posting_time, id);
DROP INDEX jobs_create_time_idx;
CREATE INDEX jobs_create_time_idx ON jobs (tenant_id, create_time, id);

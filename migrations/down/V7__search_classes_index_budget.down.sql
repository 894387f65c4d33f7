-- Undoes V7__search_classes_index_budget.sql: jobs' search vector as V2
-- generated it (weighted lexemes only, the description capped at 100,000
-- characters) and its GIN index, and the 13 indexes V7 dropped, as they
-- were after V6 (V1's definitions; V4 changed none of them). Re-creating
-- the column rewrites jobs and re-parses every row, and each index is a
-- plain CREATE INDEX (a write lock on jobs while it builds).

-- Dropping the column drops jobs_search_gin with it.
ALTER TABLE jobs DROP COLUMN search_vector;
ALTER TABLE jobs ADD COLUMN search_vector tsvector GENERATED ALWAYS AS (
    setweight(to_tsvector('english'::regconfig, left(coalesce(title, ''), 1000)), 'A') ||
    setweight(to_tsvector('english'::regconfig, left(coalesce(company_name, ''), 1000)), 'B') ||
    setweight(to_tsvector('english'::regconfig, left(bi_keywords_text(keywords), 10000)), 'B') ||
    setweight(to_tsvector('english'::regconfig, left(coalesce(description, ''), 100000)), 'C')
) STORED;
CREATE INDEX jobs_search_gin ON jobs USING gin (search_vector);

DROP FUNCTION bi_job_vector(text, text, text[], text);
DROP FUNCTION bi_prefixed(tsvector, text);

CREATE INDEX jobs_discovered_time_idx ON jobs (tenant_id, discovered_time, id);
CREATE INDEX jobs_deadline_idx        ON jobs (tenant_id, application_deadline, id);
CREATE INDEX jobs_salary_min_idx      ON jobs (tenant_id, salary_min, id);
CREATE INDEX jobs_salary_max_idx      ON jobs (tenant_id, salary_max, id);
CREATE INDEX jobs_title_idx           ON jobs (tenant_id, title, id);
CREATE INDEX jobs_company_name_idx    ON jobs (tenant_id, company_name, id);
CREATE INDEX jobs_source_site_idx     ON jobs (tenant_id, source_site, create_time);
CREATE INDEX jobs_type_level_idx      ON jobs (tenant_id, job_type, experience_level);
CREATE INDEX jobs_location_idx        ON jobs (tenant_id, location);
CREATE INDEX jobs_keywords_gin        ON jobs USING gin (keywords);
CREATE INDEX jobs_attributes_gin      ON jobs USING gin (attributes);
CREATE INDEX jobs_title_trgm          ON jobs USING gin (title gin_trgm_ops);
CREATE INDEX jobs_company_name_trgm   ON jobs USING gin (company_name gin_trgm_ops);

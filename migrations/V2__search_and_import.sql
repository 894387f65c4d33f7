-- Full-text search over jobs, and support for bulk import.

-- array_to_string is only STABLE; a generated column needs IMMUTABLE. For
-- text[] the result does not depend on any setting, so this wrapper is safe.
CREATE FUNCTION bi_keywords_text(text[]) RETURNS text
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$ SELECT array_to_string($1, ' ') $$;

-- Weights: title A, company and keywords B, description C. Inputs are capped
-- so a very long description cannot exceed tsvector's 1 MB limit.
ALTER TABLE jobs ADD COLUMN search_vector tsvector GENERATED ALWAYS AS (
    setweight(to_tsvector('english'::regconfig, left(coalesce(title, ''), 1000)), 'A') ||
    setweight(to_tsvector('english'::regconfig, left(coalesce(company_name, ''), 1000)), 'B') ||
    setweight(to_tsvector('english'::regconfig, left(bi_keywords_text(keywords), 10000)), 'B') ||
    setweight(to_tsvector('english'::regconfig, left(coalesce(description, ''), 100000)), 'C')
) STORED;

CREATE INDEX jobs_search_gin ON jobs USING gin (search_vector);

-- Applications block the deletion of their job (see JobService.DeleteJob).
CREATE INDEX applications_live_job_idx ON applications (tenant_id, job_id) WHERE delete_time IS NULL;
CREATE INDEX employer_responses_type_idx ON employer_responses (tenant_id, response_type, create_time);

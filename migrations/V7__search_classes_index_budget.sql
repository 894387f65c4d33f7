-- SearchJobs ranks by field class (title, then title with company and
-- keywords, then anywhere; newest first within a class), so a page never
-- ranks every match (docs/performance.md, "SearchJobs"). The search vector
-- keeps its weighted lexemes (A title, B company and keywords, C
-- description) and carries each title lexeme again prefixed `t:` and each
-- title, company or keyword lexeme prefixed `h:` (no positions): one GIN
-- index then finds the rows of a class exactly, however common its words
-- are elsewhere. Each text is parsed once.
CREATE FUNCTION bi_prefixed(v tsvector, prefix text) RETURNS tsvector
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    -- \x01 never occurs in a lexeme (the parser splits text on it).
    AS $$ SELECT CASE WHEN length(v) = 0 THEN v ELSE array_to_tsvector(string_to_array(
              prefix || array_to_string(tsvector_to_array(v), E'\x01' || prefix), E'\x01')) END $$;

CREATE FUNCTION bi_job_vector(title text, company text, keywords text[], description text) RETURNS tsvector
    LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE
    AS $$
DECLARE
    t tsvector;
    h tsvector;
BEGIN
    -- Inputs are capped. The description at 2,000 characters (it was
    -- 100,000): parsing is most of an insert's cost (25 us for 260
    -- characters) and grows with the length, and what a job is about is
    -- said in its first paragraphs; a word only further on is not found.
    t := setweight(to_tsvector('english'::regconfig, left(coalesce(title, ''), 1000)), 'A');
    h := t || setweight(to_tsvector('english'::regconfig, left(coalesce(company, ''), 1000)), 'B')
           || setweight(to_tsvector('english'::regconfig, left(array_to_string(keywords, ' '), 10000)), 'B');
    RETURN h || setweight(to_tsvector('english'::regconfig, left(coalesce(description, ''), 2000)), 'C')
             || bi_prefixed(t, 't:') || bi_prefixed(h, 'h:');
END
$$;

-- Dropping the column drops jobs_search_gin with it.
ALTER TABLE jobs DROP COLUMN search_vector;
ALTER TABLE jobs ADD COLUMN search_vector tsvector
    GENERATED ALWAYS AS (bi_job_vector(title, company_name, keywords, description)) STORED;
CREATE INDEX jobs_search_gin ON jobs USING gin (search_vector);

-- The index budget (docs/performance.md, "The index budget"): every
-- insert pays for every index, so jobs keeps the indexes of the query
-- paths the API promises to serve fast and drops the rest. Kept: the
-- primary key, the live job_url key, search, the default order
-- (create_time), posting_time (the listing order of job boards),
-- update_time (changes since), status (the pipeline's state), company_id
-- (a company's jobs, merges), the unlinked company key
-- (LinkJobsToCompanies) and industry with salary_max (the analytics
-- group-by). Dropped: orders and filters on other columns, which are
-- served by the tenant's rows in one of the kept orders. The two trigram
-- indexes never served the fuzzy fallback under row-level security (its
-- `<%` is not leakproof, so the OR of its conditions is evaluated after
-- the tenant policy: EXPLAIN over 1,000,000 jobs shows a sequential scan
-- with them, 7 s for a common typo).
DROP INDEX jobs_discovered_time_idx;
DROP INDEX jobs_deadline_idx;
DROP INDEX jobs_salary_min_idx;
DROP INDEX jobs_salary_max_idx;
DROP INDEX jobs_title_idx;
DROP INDEX jobs_company_name_idx;
DROP INDEX jobs_source_site_idx;
DROP INDEX jobs_type_level_idx;
DROP INDEX jobs_location_idx;
DROP INDEX jobs_keywords_gin;
DROP INDEX jobs_attributes_gin;
DROP INDEX jobs_title_trgm;
DROP INDEX jobs_company_name_trgm;

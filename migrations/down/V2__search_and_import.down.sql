-- Undoes V2__search_and_import.sql.
DROP INDEX employer_responses_type_idx;
DROP INDEX applications_live_job_idx;
-- Dropping the column drops jobs_search_gin with it.
ALTER TABLE jobs DROP COLUMN search_vector;
DROP FUNCTION bi_keywords_text(text[]);

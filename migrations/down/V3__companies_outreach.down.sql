-- Undoes V3__companies_outreach.sql: the tables of V3 (their policies,
-- indexes and grants go with them), the company key of jobs and its
-- function. The foreign key from jobs goes first: companies cannot be
-- dropped while it references them.
ALTER TABLE jobs DROP CONSTRAINT jobs_company_fk;
DROP INDEX jobs_unlinked_company_key_idx;
DROP TABLE campaign_events, campaigns, opportunities, companies;
DROP FUNCTION bi_company_key(text);

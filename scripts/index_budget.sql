-- The insert cost of each index of `jobs`: scripts/index-budget.sh runs it.
-- Copies :rows rows of jobs into a plain table, then inserts them (INSERT
-- ... SELECT, best of two) into an empty copy of jobs with no index, with
-- the generated search vector only, and with each index alone; prints
-- microseconds per row (BUDGET lines). Drops what it created.
\set ON_ERROR_STOP 1
SET client_min_messages = notice;
SET maintenance_work_mem = '256MB';
DROP TABLE IF EXISTS budget_src, budget_t;
CREATE TABLE budget_src AS SELECT tenant_id, id, title, company_name, company_id, location, salary_min, salary_max, salary_currency, description, requirements, benefits, job_url, source_site, posting_time, application_deadline, discovered_time, remote, job_type, experience_level, industry, keywords, status, attributes, create_time, update_time, delete_time, revision FROM jobs ORDER BY id DESC LIMIT :rows;
CREATE TABLE budget_t (LIKE jobs INCLUDING DEFAULTS INCLUDING GENERATED INCLUDING CONSTRAINTS);
CREATE TABLE budget_plain (LIKE jobs INCLUDING DEFAULTS INCLUDING CONSTRAINTS);
ALTER TABLE budget_plain DROP COLUMN search_vector;
DO $$
DECLARE
  defs text[] := ARRAY(SELECT replace(replace(indexdef, ' ON public.jobs ', ' ON budget_t '), 'INDEX ' || indexname, 'INDEX b_' || indexname) FROM pg_indexes WHERE tablename = 'jobs' ORDER BY indexname);
  names text[] := ARRAY(SELECT indexname FROM pg_indexes WHERE tablename = 'jobs' ORDER BY indexname);
  d text; t0 timestamptz; best float8; base float8; el float8; n bigint; i int;
  cols text := 'tenant_id, id, title, company_name, company_id, location, salary_min, salary_max, salary_currency, description, requirements, benefits, job_url, source_site, posting_time, application_deadline, discovered_time, remote, job_type, experience_level, industry, keywords, status, attributes, create_time, update_time, delete_time, revision';
BEGIN
  SELECT count(*) INTO n FROM budget_src;
  -- plain table: no generated column, no index
  best := 1e9;
  FOR r IN 1..2 LOOP
    TRUNCATE budget_plain; t0 := clock_timestamp();
    EXECUTE format('INSERT INTO budget_plain (%s) SELECT %s FROM budget_src', cols, cols);
    best := least(best, extract(epoch FROM clock_timestamp() - t0));
  END LOOP;
  RAISE NOTICE 'BUDGET|heap only, no search_vector|%', round((best * 1e6 / n)::numeric, 2);
  base := 1e9;
  FOR r IN 1..2 LOOP
    TRUNCATE budget_t; t0 := clock_timestamp();
    EXECUTE format('INSERT INTO budget_t (%s) SELECT %s FROM budget_src', cols, cols);
    base := least(base, extract(epoch FROM clock_timestamp() - t0));
  END LOOP;
  RAISE NOTICE 'BUDGET|heap + search_vector (no index)|%', round((base * 1e6 / n)::numeric, 2);
  FOR i IN 1..array_length(defs, 1) LOOP
    best := 1e9;
    FOR r IN 1..2 LOOP
      TRUNCATE budget_t;
      EXECUTE defs[i];
      t0 := clock_timestamp();
      EXECUTE format('INSERT INTO budget_t (%s) SELECT %s FROM budget_src', cols, cols);
      el := extract(epoch FROM clock_timestamp() - t0);
      best := least(best, el);
      EXECUTE 'DROP INDEX b_' || names[i];
    END LOOP;
    RAISE NOTICE 'BUDGET|%|%', names[i], round(((best - base) * 1e6 / n)::numeric, 2);
  END LOOP;
  -- all indexes together
  best := 1e9;
  FOR r IN 1..1 LOOP
    TRUNCATE budget_t;
    FOR i IN 1..array_length(defs, 1) LOOP EXECUTE defs[i]; END LOOP;
    t0 := clock_timestamp();
    EXECUTE format('INSERT INTO budget_t (%s) SELECT %s FROM budget_src', cols, cols);
    best := least(best, extract(epoch FROM clock_timestamp() - t0));
  END LOOP;
  RAISE NOTICE 'BUDGET|all indexes together (total per row)|%', round((best * 1e6 / n)::numeric, 2);
END $$;
DROP TABLE budget_src, budget_t, budget_plain;

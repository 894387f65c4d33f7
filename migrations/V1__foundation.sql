-- bi-data foundation schema.
--
-- Invariants (see ARCHITECTURE.md):
--   * tenant_id leads every primary key, unique index and foreign key.
--   * every tenant table has FORCE ROW LEVEL SECURITY with a policy that
--     compares tenant_id to the transaction's `app.tenant_id` setting; an
--     unset or empty setting matches nothing (fail closed).
--   * the service runs as `bi_data_app`, which owns nothing, has no
--     BYPASSRLS, and may only SELECT/INSERT audit rows (append-only).

DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'bi_data_app') THEN
        CREATE ROLE bi_data_app NOLOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE;
    END IF;
    -- The login role that applies migrations is usually the one the pool
    -- connects with; it must be able to `SET ROLE bi_data_app`.
    IF NOT pg_has_role(current_user, 'bi_data_app', 'MEMBER') THEN
        BEGIN
            EXECUTE format('GRANT bi_data_app TO %I', current_user);
        EXCEPTION WHEN insufficient_privilege THEN
            RAISE WARNING 'cannot grant bi_data_app to %; grant it by hand', current_user;
        END;
    END IF;
END
$$;

CREATE EXTENSION IF NOT EXISTS pg_trgm;

GRANT USAGE ON SCHEMA public TO bi_data_app;
GRANT SELECT ON refinery_schema_history TO bi_data_app;

-- The tenant of the current transaction, NULL when unset (fail closed).
CREATE FUNCTION app_tenant() RETURNS uuid
    LANGUAGE sql STABLE PARALLEL SAFE
    AS $$ SELECT NULLIF(current_setting('app.tenant_id', true), '')::uuid $$;

------------------------------------------------------------------------------
-- Jobs
------------------------------------------------------------------------------
CREATE TABLE jobs (
    tenant_id            uuid        NOT NULL,
    id                   uuid        NOT NULL,
    title                text        NOT NULL CHECK (char_length(title) BETWEEN 1 AND 255),
    company_name         text        NOT NULL CHECK (char_length(company_name) BETWEEN 1 AND 255),
    company_id           uuid,
    location             text,
    salary_min           bigint,
    salary_max           bigint,
    salary_currency      text        NOT NULL DEFAULT 'USD' CHECK (salary_currency ~ '^[A-Z]{3}$'),
    description          text,
    requirements         text,
    benefits             text,
    job_url              text        CHECK (char_length(job_url) <= 500),
    source_site          text,
    posting_time         timestamptz,
    application_deadline timestamptz,
    discovered_time      timestamptz NOT NULL DEFAULT now(),
    remote               boolean     NOT NULL DEFAULT false,
    job_type             text,
    experience_level     text,
    industry             text,
    keywords             text[]      NOT NULL DEFAULT '{}',
    status               text        NOT NULL DEFAULT 'DISCOVERED',
    attributes           jsonb       NOT NULL DEFAULT '{}',
    create_time          timestamptz NOT NULL DEFAULT now(),
    update_time          timestamptz NOT NULL DEFAULT now(),
    delete_time          timestamptz,
    revision             bigint      NOT NULL DEFAULT 1,
    PRIMARY KEY (tenant_id, id),
    CONSTRAINT jobs_salary_range CHECK (salary_min IS NULL OR salary_max IS NULL OR salary_min <= salary_max)
);

-- job_url is unique per tenant among live jobs.
CREATE UNIQUE INDEX jobs_live_job_url_key ON jobs (tenant_id, job_url)
    WHERE delete_time IS NULL AND job_url IS NOT NULL;
-- Orders offered by ListJobs (id is the keyset tiebreaker).
CREATE INDEX jobs_create_time_idx     ON jobs (tenant_id, create_time, id);
CREATE INDEX jobs_update_time_idx     ON jobs (tenant_id, update_time, id);
CREATE INDEX jobs_posting_time_idx    ON jobs (tenant_id, posting_time, id);
CREATE INDEX jobs_discovered_time_idx ON jobs (tenant_id, discovered_time, id);
CREATE INDEX jobs_deadline_idx        ON jobs (tenant_id, application_deadline, id);
CREATE INDEX jobs_salary_min_idx      ON jobs (tenant_id, salary_min, id);
CREATE INDEX jobs_salary_max_idx      ON jobs (tenant_id, salary_max, id);
CREATE INDEX jobs_title_idx           ON jobs (tenant_id, title, id);
CREATE INDEX jobs_company_name_idx    ON jobs (tenant_id, company_name, id);
-- Equality filters on low-cardinality or reference columns.
CREATE INDEX jobs_status_idx          ON jobs (tenant_id, status, create_time);
CREATE INDEX jobs_source_site_idx     ON jobs (tenant_id, source_site, create_time);
CREATE INDEX jobs_company_id_idx      ON jobs (tenant_id, company_id) WHERE company_id IS NOT NULL;
CREATE INDEX jobs_type_level_idx      ON jobs (tenant_id, job_type, experience_level);
CREATE INDEX jobs_location_idx        ON jobs (tenant_id, location);
CREATE INDEX jobs_industry_idx        ON jobs (tenant_id, industry);
-- `keywords:"x"` (array containment), `attributes:key` / `attributes.k = v`.
CREATE INDEX jobs_keywords_gin        ON jobs USING gin (keywords);
CREATE INDEX jobs_attributes_gin      ON jobs USING gin (attributes);
-- Wildcard filters (`title = "*engineer*"` compiles to ILIKE).
CREATE INDEX jobs_title_trgm          ON jobs USING gin (title gin_trgm_ops);
CREATE INDEX jobs_company_name_trgm   ON jobs USING gin (company_name gin_trgm_ops);

------------------------------------------------------------------------------
-- Applications and employer responses
------------------------------------------------------------------------------
CREATE TABLE applications (
    tenant_id            uuid        NOT NULL,
    id                   uuid        NOT NULL,
    job_id               uuid        NOT NULL,
    status               text        NOT NULL DEFAULT 'SUBMITTED',
    application_time     timestamptz,
    cover_letter_version text,
    resume_version       text,
    interview_time       timestamptz,
    response_time        timestamptz,
    notes                text,
    credibility_rating   double precision,
    exaggeration_level   double precision,
    integrity_score      double precision,
    create_time          timestamptz NOT NULL DEFAULT now(),
    update_time          timestamptz NOT NULL DEFAULT now(),
    delete_time          timestamptz,
    revision             bigint      NOT NULL DEFAULT 1,
    PRIMARY KEY (tenant_id, id),
    FOREIGN KEY (tenant_id, job_id) REFERENCES jobs (tenant_id, id)
);
CREATE INDEX applications_job_idx         ON applications (tenant_id, job_id, create_time);
CREATE INDEX applications_status_idx      ON applications (tenant_id, status, create_time);
CREATE INDEX applications_create_time_idx ON applications (tenant_id, create_time, id);
CREATE INDEX applications_time_idx        ON applications (tenant_id, application_time, id);

CREATE TABLE employer_responses (
    tenant_id       uuid        NOT NULL,
    id              uuid        NOT NULL,
    application_id  uuid        NOT NULL,
    response_type   text        NOT NULL,
    response_time   timestamptz,
    subject_line    text,
    email_content   text,
    sender_email    text,
    sentiment_score double precision,
    requires_action boolean     NOT NULL DEFAULT false,
    action_taken    text,
    follow_up_time  timestamptz,
    create_time     timestamptz NOT NULL DEFAULT now(),
    update_time     timestamptz NOT NULL DEFAULT now(),
    revision        bigint      NOT NULL DEFAULT 1,
    PRIMARY KEY (tenant_id, id),
    FOREIGN KEY (tenant_id, application_id) REFERENCES applications (tenant_id, id)
);
CREATE INDEX employer_responses_application_idx ON employer_responses (tenant_id, application_id, response_time);
CREATE INDEX employer_responses_create_time_idx ON employer_responses (tenant_id, create_time, id);

------------------------------------------------------------------------------
-- Ingest runs (bulk imports)
------------------------------------------------------------------------------
CREATE TABLE ingest_runs (
    tenant_id   uuid        NOT NULL,
    id          uuid        NOT NULL,
    source_site text,
    start_time  timestamptz NOT NULL DEFAULT now(),
    end_time    timestamptz,
    received    bigint      NOT NULL DEFAULT 0,
    inserted    bigint      NOT NULL DEFAULT 0,
    updated     bigint      NOT NULL DEFAULT 0,
    failed      bigint      NOT NULL DEFAULT 0,
    errors      jsonb       NOT NULL DEFAULT '[]',
    create_time timestamptz NOT NULL DEFAULT now(),
    update_time timestamptz NOT NULL DEFAULT now(),
    revision    bigint      NOT NULL DEFAULT 1,
    PRIMARY KEY (tenant_id, id)
);
CREATE INDEX ingest_runs_start_idx ON ingest_runs (tenant_id, start_time, id);

------------------------------------------------------------------------------
-- Idempotency keys (AIP-155 request_id, remembered 24 h)
------------------------------------------------------------------------------
CREATE TABLE idempotency_keys (
    tenant_id   uuid        NOT NULL,
    request_id  text        NOT NULL CHECK (char_length(request_id) <= 36),
    method      text        NOT NULL,
    response    bytea       NOT NULL,
    create_time timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, request_id)
);
CREATE INDEX idempotency_keys_create_time_idx ON idempotency_keys (create_time);

------------------------------------------------------------------------------
-- Audit events: append-only for the service role
------------------------------------------------------------------------------
CREATE TABLE audit_events (
    tenant_id  uuid        NOT NULL,
    id         uuid        NOT NULL,
    event_time timestamptz NOT NULL DEFAULT now(),
    actor      text        NOT NULL,
    entity     text        NOT NULL,
    entity_id  uuid        NOT NULL,
    action     text        NOT NULL,
    before     jsonb,
    after      jsonb,
    request_id text,
    trace_id   text,
    revision   bigint      NOT NULL DEFAULT 1, -- constant: audit rows never change
    PRIMARY KEY (tenant_id, id)
);
CREATE INDEX audit_events_time_idx   ON audit_events (tenant_id, event_time, id);
CREATE INDEX audit_events_entity_idx ON audit_events (tenant_id, entity, entity_id, event_time);

------------------------------------------------------------------------------
-- Row-level security and grants
------------------------------------------------------------------------------
DO $$
DECLARE t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['jobs', 'applications', 'employer_responses', 'ingest_runs',
                             'idempotency_keys', 'audit_events']
    LOOP
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format('ALTER TABLE %I FORCE ROW LEVEL SECURITY', t);
        EXECUTE format('CREATE POLICY tenant_isolation ON %I USING (tenant_id = app_tenant()) '
                       'WITH CHECK (tenant_id = app_tenant())', t);
    END LOOP;
END
$$;

-- Expired idempotency keys of any tenant may be purged by the background sweeper.
CREATE POLICY purge_expired ON idempotency_keys FOR DELETE
    USING (create_time < now() - interval '24 hours');

GRANT SELECT, INSERT, UPDATE ON jobs, applications, employer_responses, ingest_runs TO bi_data_app;
GRANT SELECT, INSERT, UPDATE, DELETE ON idempotency_keys TO bi_data_app;
GRANT SELECT, INSERT ON audit_events TO bi_data_app;

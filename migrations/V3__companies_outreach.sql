-- CompanyService and OutreachService: companies (master data), automation
-- opportunities, outreach campaigns and their append-only event log.
-- Same invariants as V1: tenant_id leads every key, FORCE RLS, the service
-- role owns nothing.

-- The matching key of a company name: lower case, punctuation folded to
-- spaces, trailing legal suffixes (Inc, Ltd, GmbH, Corp...) dropped. "ACME
-- Corporation", "Acme Corp." and "acme, inc" all become "acme". A name that
-- is nothing but a suffix keeps it ("Company" stays "company").
CREATE FUNCTION bi_company_key(text) RETURNS text
    LANGUAGE sql IMMUTABLE PARALLEL SAFE STRICT
    AS $$
    SELECT coalesce(nullif(btrim(regexp_replace(k, '( (inc|incorporated|corp|corporation|co|company|ltd|limited|llc|llp|lp|plc|gmbh|mbh|ag|kg|kgaa|se|sa|sas|sarl|srl|spa|bv|nv|oy|oyj|ab|as|aps|pty|pte|pvt|kk))+$', '')), ''), k)
    FROM (SELECT btrim(regexp_replace(lower($1), '[^[:alnum:]]+', ' ', 'g')) AS k) s
    $$;

------------------------------------------------------------------------------
-- Companies
------------------------------------------------------------------------------
CREATE TABLE companies (
    tenant_id         uuid        NOT NULL,
    id                uuid        NOT NULL,
    name              text        NOT NULL CHECK (char_length(name) BETWEEN 1 AND 255),
    name_key          text        GENERATED ALWAYS AS (bi_company_key(name)) STORED,
    website           text,
    industry          text,
    size              text,
    location          text,
    description       text,
    technology_stack  text[]      NOT NULL DEFAULT '{}',
    pain_points       text[]      NOT NULL DEFAULT '{}',
    decision_makers   jsonb       NOT NULL DEFAULT '[]',
    enrichment        jsonb       NOT NULL DEFAULT '{}',
    confidence_score  double precision CHECK (confidence_score BETWEEN 0 AND 1),
    research_time     timestamptz,
    master_company_id uuid,
    create_time       timestamptz NOT NULL DEFAULT now(),
    update_time       timestamptz NOT NULL DEFAULT now(),
    delete_time       timestamptz,
    revision          bigint      NOT NULL DEFAULT 1,
    PRIMARY KEY (tenant_id, id),
    FOREIGN KEY (tenant_id, master_company_id) REFERENCES companies (tenant_id, id),
    CONSTRAINT companies_merged_are_deleted CHECK (master_company_id IS NULL OR delete_time IS NOT NULL)
);
-- SearchCompanies: trigram similarity on the matching key.
CREATE INDEX companies_name_key_trgm   ON companies USING gin (name_key gin_trgm_ops);
CREATE INDEX companies_name_key_idx    ON companies (tenant_id, name_key) WHERE delete_time IS NULL;
CREATE INDEX companies_create_time_idx ON companies (tenant_id, create_time, id);
CREATE INDEX companies_name_idx        ON companies (tenant_id, name, id);
CREATE INDEX companies_master_idx      ON companies (tenant_id, master_company_id) WHERE master_company_id IS NOT NULL;
CREATE INDEX companies_industry_idx    ON companies (tenant_id, industry);
CREATE INDEX companies_stack_gin       ON companies USING gin (technology_stack);
CREATE INDEX companies_pain_gin        ON companies USING gin (pain_points);
CREATE INDEX companies_enrichment_gin  ON companies USING gin (enrichment);

-- A job's company_id names a company of its tenant. The service checks that
-- the company is live; this key is the backstop. NOT VALID: rows written
-- before companies existed are not re-checked.
ALTER TABLE jobs ADD CONSTRAINT jobs_company_fk
    FOREIGN KEY (tenant_id, company_id) REFERENCES companies (tenant_id, id) NOT VALID;
-- LinkJobsToCompanies: unlinked jobs by the matching key of their company name.
CREATE INDEX jobs_unlinked_company_key_idx ON jobs (tenant_id, bi_company_key(company_name))
    WHERE company_id IS NULL AND delete_time IS NULL;

------------------------------------------------------------------------------
-- Opportunities
------------------------------------------------------------------------------
CREATE TABLE opportunities (
    tenant_id                 uuid        NOT NULL,
    id                        uuid        NOT NULL,
    company_id                uuid        NOT NULL,
    problem_description       text,
    solution_approach         text        NOT NULL CHECK (char_length(solution_approach) >= 1),
    estimated_value           bigint      CHECK (estimated_value >= 0),
    implementation_complexity text,
    confidence_score          double precision CHECK (confidence_score BETWEEN 0 AND 1),
    proof_of_concept_created  boolean     NOT NULL DEFAULT false,
    status                    text        NOT NULL DEFAULT 'IDENTIFIED',
    create_time               timestamptz NOT NULL DEFAULT now(),
    update_time               timestamptz NOT NULL DEFAULT now(),
    delete_time               timestamptz,
    revision                  bigint      NOT NULL DEFAULT 1,
    PRIMARY KEY (tenant_id, id),
    -- Campaigns reference (opportunity, company) pairs.
    UNIQUE (tenant_id, id, company_id),
    FOREIGN KEY (tenant_id, company_id) REFERENCES companies (tenant_id, id) DEFERRABLE INITIALLY DEFERRED
);
CREATE INDEX opportunities_company_idx     ON opportunities (tenant_id, company_id) WHERE delete_time IS NULL;
CREATE INDEX opportunities_status_idx      ON opportunities (tenant_id, status, create_time);
CREATE INDEX opportunities_create_time_idx ON opportunities (tenant_id, create_time, id);
CREATE INDEX opportunities_value_idx       ON opportunities (tenant_id, estimated_value, id);

------------------------------------------------------------------------------
-- Campaigns and their events
------------------------------------------------------------------------------
CREATE TABLE campaigns (
    tenant_id       uuid        NOT NULL,
    id              uuid        NOT NULL,
    company_id      uuid        NOT NULL,
    opportunity_id  uuid,
    contact_method  text,
    contact_person  text,
    message_content text,
    status          text        NOT NULL DEFAULT 'DRAFT',
    sent_time       timestamptz,
    response_time   timestamptz,
    follow_up_time  timestamptz,
    notes           text,
    create_time     timestamptz NOT NULL DEFAULT now(),
    update_time     timestamptz NOT NULL DEFAULT now(),
    delete_time     timestamptz,
    revision        bigint      NOT NULL DEFAULT 1,
    PRIMARY KEY (tenant_id, id),
    -- Deferred: a merge moves opportunities and campaigns to the survivor
    -- in separate statements of one transaction.
    FOREIGN KEY (tenant_id, company_id) REFERENCES companies (tenant_id, id) DEFERRABLE INITIALLY DEFERRED,
    -- The opportunity belongs to the campaign's company.
    FOREIGN KEY (tenant_id, opportunity_id, company_id)
        REFERENCES opportunities (tenant_id, id, company_id) DEFERRABLE INITIALLY DEFERRED
);
CREATE INDEX campaigns_company_idx     ON campaigns (tenant_id, company_id) WHERE delete_time IS NULL;
CREATE INDEX campaigns_opportunity_idx ON campaigns (tenant_id, opportunity_id) WHERE opportunity_id IS NOT NULL;
CREATE INDEX campaigns_status_idx      ON campaigns (tenant_id, status, create_time);
CREATE INDEX campaigns_create_time_idx ON campaigns (tenant_id, create_time, id);
-- ListDueFollowUps: open campaigns by follow-up time (the subset the
-- service declares as `due_follow_ups`).
CREATE INDEX campaigns_due_follow_ups_idx ON campaigns (tenant_id, follow_up_time, id)
    WHERE delete_time IS NULL AND status IN ('SENT', 'OPENED', 'REPLIED');

-- Every event recorded on a campaign, numbered 1, 2, 3... per campaign.
-- Append-only for the service role (the funnel is computed from it).
CREATE TABLE campaign_events (
    tenant_id   uuid        NOT NULL,
    id          uuid        NOT NULL,
    campaign_id uuid        NOT NULL,
    seq         bigint      NOT NULL,
    event       text        NOT NULL,
    event_time  timestamptz NOT NULL,
    create_time timestamptz NOT NULL DEFAULT now(),
    revision    bigint      NOT NULL DEFAULT 1, -- constant: events never change
    PRIMARY KEY (tenant_id, id),
    UNIQUE (tenant_id, campaign_id, seq),
    FOREIGN KEY (tenant_id, campaign_id) REFERENCES campaigns (tenant_id, id)
);
CREATE INDEX campaign_events_time_idx ON campaign_events (tenant_id, event_time, event);
CREATE INDEX campaign_events_create_time_idx ON campaign_events (tenant_id, create_time, id);

------------------------------------------------------------------------------
-- Row-level security and grants
------------------------------------------------------------------------------
DO $$
DECLARE t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['companies', 'opportunities', 'campaigns', 'campaign_events']
    LOOP
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format('ALTER TABLE %I FORCE ROW LEVEL SECURITY', t);
        EXECUTE format('CREATE POLICY tenant_isolation ON %I USING (tenant_id = app_tenant()) '
                       'WITH CHECK (tenant_id = app_tenant())', t);
    END LOOP;
END
$$;

GRANT SELECT, INSERT, UPDATE ON companies, opportunities, campaigns TO bi_data_app;
GRANT SELECT, INSERT ON campaign_events TO bi_data_app;

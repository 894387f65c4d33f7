-- Undoes V10__cheaper_row_functions.sql: the V3 body of bi_company_key (the same
-- keys, so the index and companies.name_key stay valid).
CREATE OR REPLACE FUNCTION bi_company_key(text) RETURNS text
    LANGUAGE sql IMMUTABLE PARALLEL SAFE STRICT
    AS $$
    SELECT coalesce(nullif(btrim(regexp_replace(k, '( (inc|incorporated|corp|corporation|co|company|ltd|limited|llc|llp|lp|plc|gmbh|mbh|ag|kg|kgaa|se|sa|sas|sarl|srl|spa|bv|nv|oy|oyj|ab|as|aps|pty|pte|pvt|kk))+$', '')), ''), k)
    FROM (SELECT btrim(regexp_replace(lower($1), '[^[:alnum:]]+', ' ', 'g')) AS k) s
    $$;

-- The V7 body of bi_job_vector (the same vectors).
CREATE OR REPLACE FUNCTION bi_job_vector(title text, company text, keywords text[], description text) RETURNS tsvector
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


-- The two functions every job insert runs, made cheaper with the same
-- results (docs/performance.md, "Imports and batches").
--
-- 1. bi_company_key without the suffix regular expression: the same key,
-- about ten times cheaper.
--
-- Every job insert computes it for jobs_unlinked_company_key_idx (an
-- imported job has no company_id yet), every company for its name_key.
-- The V3 body was SQL that cannot be inlined (STRICT over a non-strict
-- body), so each call ran as a query of its own, and its anchored
-- alternation `( (inc|...))+$` was tried at every position of the name:
-- 13.5 us a call against 1.3 us for this loop over the last words (50,000
-- names, psql). It strips the same words: after the first step the words
-- are separated by single spaces, and a suffix word only goes when a word
-- stays before it (a name that is nothing but a suffix keeps it).
--
-- 2. bi_job_vector with bi_prefixed written out: the plpgsql expression
-- then calls no SQL function (12.0 -> 10.6 us a row over 50,000 synthetic
-- jobs, psql).
--
-- The outputs are the same for every input, so the indexes and generated
-- columns built with the old bodies stay valid (nothing is rewritten).
-- The tests compare both against the old expressions over a corpus of
-- names and jobs (companies::the_company_key_is_the_one_of_the_v3_expression,
-- scale::the_job_vector_is_the_one_of_v7). The data is not checked here:
-- under FORCE ROW LEVEL SECURITY the owner sees no tenant's rows.
CREATE OR REPLACE FUNCTION bi_company_key(text) RETURNS text
    LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE STRICT
    AS $$
DECLARE
    k text := btrim(regexp_replace(lower($1), '[^[:alnum:]]+', ' ', 'g'));
    s text := k;
    w text;
BEGIN
    LOOP
        w := split_part(s, ' ', -1);
        EXIT WHEN w = s OR NOT (w = ANY ('{inc,incorporated,corp,corporation,co,company,ltd,limited,llc,llp,lp,plc,gmbh,mbh,ag,kg,kgaa,se,sa,sas,sarl,srl,spa,bv,nv,oy,oyj,ab,as,aps,pty,pte,pvt,kk}'::text[]));
        s := left(s, length(s) - length(w) - 1);
    END LOOP;
    RETURN s;
END
$$;

CREATE OR REPLACE FUNCTION bi_job_vector(title text, company text, keywords text[], description text) RETURNS tsvector
    LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE
    AS $$
DECLARE
    t tsvector;
    h tsvector;
BEGIN
    -- As in V7: inputs capped, the description at 2,000 characters; the
    -- title lexemes again prefixed `t:`, the title, company and keyword
    -- ones `h:` (\x01 never occurs in a lexeme).
    t := setweight(to_tsvector('english'::regconfig, left(coalesce(title, ''), 1000)), 'A');
    h := t || setweight(to_tsvector('english'::regconfig, left(coalesce(company, ''), 1000)), 'B')
           || setweight(to_tsvector('english'::regconfig, left(array_to_string(keywords, ' '), 10000)), 'B');
    RETURN h || setweight(to_tsvector('english'::regconfig, left(coalesce(description, ''), 2000)), 'C')
             || CASE WHEN length(t) = 0 THEN t ELSE array_to_tsvector(string_to_array(
                    't:' || array_to_string(tsvector_to_array(t), E'\x01t:'), E'\x01')) END
             || CASE WHEN length(h) = 0 THEN h ELSE array_to_tsvector(string_to_array(
                    'h:' || array_to_string(tsvector_to_array(h), E'\x01h:'), E'\x01')) END;
END
$$;

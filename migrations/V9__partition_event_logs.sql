-- The two append-only logs, audit_events and campaign_events, become tables
-- partitioned by month (RANGE on event_time, months in UTC), migrated in
-- place: the old table is renamed, the partitioned parent is created with
-- the same columns, defaults, compression, constraints, RLS policy and
-- grants, monthly partitions are made for every month holding rows plus the
-- current month and three ahead, the rows are moved, the old table dropped.
--
-- Keys include the partition key (PostgreSQL requires it): the primary keys
-- become (tenant_id, id, event_time) and the per-campaign numbering
-- (tenant_id, campaign_id, seq, event_time). Ids are UUIDv7 made by the
-- service and seq is taken under a per-campaign advisory lock
-- (store::records::next_in_sequence), so both stay unique in practice.
--
-- A DEFAULT partition per table catches a row whose month has no partition
-- yet (an event dated long ago), so an insert never fails for lack of one;
-- bi_partition_month moves such rows into their month's partition when it
-- creates it. Partitions carry no policies: they get no grants (the app
-- role cannot name them) and RLS enabled and forced with no policy
-- (deny-all but for superusers); access goes through the parent, whose
-- policy applies. The functions lift FORCE only inside their transaction,
-- on the partition whose rows they move or count.
--
-- The service keeps partitions ahead and applies retention with the
-- functions below (store::partitions, docs/partitions.md).

-- The partition of `parent` for the UTC month starting at `month_start`:
-- created (rows of that month moved out of the default partition, then
-- attached) unless it exists. Returns the new partition's name, NULL when
-- it already existed.
CREATE FUNCTION bi_partition_month(parent regclass, month_start timestamptz) RETURNS text
    LANGUAGE plpgsql
    SET search_path = public, pg_catalog
    AS $$
DECLARE
    lo timestamptz := date_trunc('month', month_start AT TIME ZONE 'UTC') AT TIME ZONE 'UTC';
    hi timestamptz := (date_trunc('month', month_start AT TIME ZONE 'UTC') + interval '1 month') AT TIME ZONE 'UTC';
    base text;
    part text;
    def text;
    key text;
BEGIN
    SELECT c.relname INTO base FROM pg_class c WHERE c.oid = parent;
    part := base || '_p' || to_char(lo AT TIME ZONE 'UTC', 'YYYY_MM');
    IF EXISTS (SELECT 1 FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
                WHERE i.inhparent = parent AND c.relname = part) THEN
        RETURN NULL;
    END IF;
    SELECT a.attname INTO STRICT key
      FROM pg_partitioned_table p
      JOIN pg_attribute a ON a.attrelid = p.partrelid AND a.attnum = p.partattrs[0]
     WHERE p.partrelid = parent;
    EXECUTE format('CREATE TABLE %I (LIKE %s INCLUDING DEFAULTS INCLUDING COMPRESSION INCLUDING STORAGE)',
                   part, parent);
    EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', part);
    EXECUTE format('ALTER TABLE %I FORCE ROW LEVEL SECURITY', part);
    SELECT c.relname INTO def
      FROM pg_partitioned_table p JOIN pg_class c ON c.oid = p.partdefid
     WHERE p.partrelid = parent;
    -- An empty default partition (never written, or vacuumed to nothing
    -- after its rows moved) has no pages: nothing to move.
    IF def IS NOT NULL AND pg_relation_size(format('%I', def)::regclass) > 0 THEN
        -- The owner sees the rows only while RLS is not forced on them (the
        -- ATTACH below locks the default partition exclusively anyway).
        EXECUTE format('ALTER TABLE %I NO FORCE ROW LEVEL SECURITY', def);
        EXECUTE format('ALTER TABLE %I NO FORCE ROW LEVEL SECURITY', part);
        EXECUTE format('WITH moved AS (DELETE FROM %I WHERE %I >= $1 AND %I < $2 RETURNING *) '
                       'INSERT INTO %I SELECT * FROM moved', def, key, key, part)
            USING lo, hi;
        EXECUTE format('ALTER TABLE %I FORCE ROW LEVEL SECURITY', part);
        EXECUTE format('ALTER TABLE %I FORCE ROW LEVEL SECURITY', def);
    END IF;
    EXECUTE format('ALTER TABLE %s ATTACH PARTITION %I FOR VALUES FROM (%L) TO (%L)', parent, part, lo, hi);
    RETURN part;
END
$$;

-- Partitions of `parent` for every month that has rows in its default
-- partition and for the current UTC month and `months_ahead` after it.
-- Returns the names of the partitions it created.
CREATE FUNCTION bi_ensure_partitions(parent regclass, months_ahead integer) RETURNS SETOF text
    LANGUAGE plpgsql
    SET search_path = public, pg_catalog
    AS $$
DECLARE
    def text;
    key text;
    m timestamptz;
    months timestamptz[];
    made text;
    now_month timestamptz := date_trunc('month', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC';
BEGIN
    SELECT c.relname INTO def
      FROM pg_partitioned_table p JOIN pg_class c ON c.oid = p.partdefid
     WHERE p.partrelid = parent;
    SELECT a.attname INTO STRICT key
      FROM pg_partitioned_table p
      JOIN pg_attribute a ON a.attrelid = p.partrelid AND a.attnum = p.partattrs[0]
     WHERE p.partrelid = parent;
    -- Only a default partition with pages can hold rows: an empty one is
    -- neither altered nor locked (the common case, every run).
    IF def IS NOT NULL AND pg_relation_size(format('%I', def)::regclass) > 0 THEN
        -- Read first (no cursor stays open on it while it is altered below).
        EXECUTE format('ALTER TABLE %I NO FORCE ROW LEVEL SECURITY', def);
        EXECUTE format('SELECT array_agg(DISTINCT date_trunc(''month'', %I AT TIME ZONE ''UTC'') '
                       'AT TIME ZONE ''UTC'') FROM %I', key, def) INTO months;
        EXECUTE format('ALTER TABLE %I FORCE ROW LEVEL SECURITY', def);
        FOREACH m IN ARRAY coalesce(months, '{}') LOOP
            made := bi_partition_month(parent, m);
            IF made IS NOT NULL THEN
                RETURN NEXT made;
            END IF;
        END LOOP;
    END IF;
    FOR i IN 0 .. greatest(months_ahead, 0) LOOP
        made := bi_partition_month(parent, now_month + make_interval(months => i));
        IF made IS NOT NULL THEN
            RETURN NEXT made;
        END IF;
    END LOOP;
END
$$;

-- Detaches and drops the partitions of `parent` whose whole range ends at
-- or before the start of the UTC month `keep_months` before the current
-- one (keep_months = 12 in December 2026 keeps December 2025 onwards).
-- Returns what it dropped; the caller audits it in the same transaction.
CREATE FUNCTION bi_drop_partitions_before(parent regclass, keep_months integer)
    RETURNS TABLE (partition text, range_from timestamptz, range_to timestamptz, row_count bigint)
    LANGUAGE plpgsql
    SET search_path = public, pg_catalog
    AS $$
DECLARE
    cutoff timestamptz := (date_trunc('month', now() AT TIME ZONE 'UTC')
                           - make_interval(months => keep_months)) AT TIME ZONE 'UTC';
    r record;
    names text[] := '{}';
    los timestamptz[] := '{}';
    his timestamptz[] := '{}';
    counts bigint[] := '{}';
    n bigint;
BEGIN
    IF keep_months IS NULL OR keep_months < 1 THEN
        RAISE EXCEPTION 'keep_months must be at least 1, not %', keep_months;
    END IF;
    -- Counted first, detached after: DETACH locks the parent (writers of
    -- the log wait) until COMMIT, so nothing slow runs once it is taken.
    FOR r IN
        SELECT c.relname AS name,
               substring(pg_get_expr(c.relpartbound, c.oid) FROM 'FROM \(''([^'']+)''\)')::timestamptz AS lo,
               substring(pg_get_expr(c.relpartbound, c.oid) FROM 'TO \(''([^'']+)''\)')::timestamptz AS hi
          FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
         WHERE i.inhparent = parent AND pg_get_expr(c.relpartbound, c.oid) <> 'DEFAULT'
         ORDER BY 2
    LOOP
        CONTINUE WHEN r.hi > cutoff;
        EXECUTE format('ALTER TABLE %I NO FORCE ROW LEVEL SECURITY', r.name); -- to count its rows
        EXECUTE format('SELECT count(*) FROM %I', r.name) INTO n;
        names := names || r.name::text;
        los := los || r.lo;
        his := his || r.hi;
        counts := counts || n;
    END LOOP;
    FOR i IN 1 .. coalesce(array_length(names, 1), 0) LOOP
        EXECUTE format('ALTER TABLE %s DETACH PARTITION %I', parent, names[i]);
        EXECUTE format('DROP TABLE %I', names[i]);
        partition := names[i];
        range_from := los[i];
        range_to := his[i];
        row_count := counts[i];
        RETURN NEXT;
    END LOOP;
END
$$;

-- Only the owner (migrations, the service's maintenance connection) runs them.
REVOKE EXECUTE ON FUNCTION bi_partition_month(regclass, timestamptz) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION bi_ensure_partitions(regclass, integer) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION bi_drop_partitions_before(regclass, integer) FROM PUBLIC;

------------------------------------------------------------------------------
-- audit_events
------------------------------------------------------------------------------
ALTER TABLE audit_events RENAME TO audit_events_v8;
ALTER TABLE audit_events_v8 RENAME CONSTRAINT audit_events_pkey TO audit_events_v8_pkey;
ALTER INDEX audit_events_time_idx RENAME TO audit_events_v8_time_idx;
ALTER INDEX audit_events_entity_idx RENAME TO audit_events_v8_entity_idx;
-- The owner reads the old rows (FORCE would hide them from it).
ALTER TABLE audit_events_v8 NO FORCE ROW LEVEL SECURITY;

CREATE TABLE audit_events (
    LIKE audit_events_v8 INCLUDING DEFAULTS INCLUDING COMPRESSION INCLUDING STORAGE,
    PRIMARY KEY (tenant_id, id, event_time)
) PARTITION BY RANGE (event_time);
CREATE INDEX audit_events_time_idx   ON audit_events (tenant_id, event_time, id);
CREATE INDEX audit_events_entity_idx ON audit_events (tenant_id, entity, entity_id, event_time);
CREATE TABLE audit_events_default PARTITION OF audit_events DEFAULT;
ALTER TABLE audit_events_default ENABLE ROW LEVEL SECURITY;
ALTER TABLE audit_events_default FORCE ROW LEVEL SECURITY;

SELECT bi_partition_month('audit_events', m)
  FROM (SELECT DISTINCT date_trunc('month', event_time AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' AS m
          FROM audit_events_v8) AS months;
SELECT bi_ensure_partitions('audit_events', 3);

INSERT INTO audit_events SELECT * FROM audit_events_v8;
DROP TABLE audit_events_v8;

ALTER TABLE audit_events ENABLE ROW LEVEL SECURITY;
ALTER TABLE audit_events FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON audit_events USING (tenant_id = app_tenant())
    WITH CHECK (tenant_id = app_tenant());
GRANT SELECT, INSERT ON audit_events TO bi_data_app;

------------------------------------------------------------------------------
-- campaign_events
------------------------------------------------------------------------------
ALTER TABLE campaign_events RENAME TO campaign_events_v8;
ALTER TABLE campaign_events_v8 RENAME CONSTRAINT campaign_events_pkey TO campaign_events_v8_pkey;
ALTER TABLE campaign_events_v8 RENAME CONSTRAINT campaign_events_tenant_id_campaign_id_seq_key
    TO campaign_events_v8_seq_key;
ALTER TABLE campaign_events_v8 RENAME CONSTRAINT campaign_events_tenant_id_campaign_id_fkey
    TO campaign_events_v8_campaign_fkey;
ALTER INDEX campaign_events_time_idx RENAME TO campaign_events_v8_time_idx;
ALTER INDEX campaign_events_create_time_idx RENAME TO campaign_events_v8_create_time_idx;
ALTER TABLE campaign_events_v8 NO FORCE ROW LEVEL SECURITY;

CREATE TABLE campaign_events (
    LIKE campaign_events_v8 INCLUDING DEFAULTS INCLUDING COMPRESSION INCLUDING STORAGE,
    PRIMARY KEY (tenant_id, id, event_time),
    CONSTRAINT campaign_events_tenant_id_campaign_id_seq_key UNIQUE (tenant_id, campaign_id, seq, event_time),
    CONSTRAINT campaign_events_tenant_id_campaign_id_fkey FOREIGN KEY (tenant_id, campaign_id)
        REFERENCES campaigns (tenant_id, id)
) PARTITION BY RANGE (event_time);
CREATE INDEX campaign_events_time_idx ON campaign_events (tenant_id, event_time, event);
CREATE INDEX campaign_events_create_time_idx ON campaign_events (tenant_id, create_time, id);
CREATE TABLE campaign_events_default PARTITION OF campaign_events DEFAULT;
ALTER TABLE campaign_events_default ENABLE ROW LEVEL SECURITY;
ALTER TABLE campaign_events_default FORCE ROW LEVEL SECURITY;

SELECT bi_partition_month('campaign_events', m)
  FROM (SELECT DISTINCT date_trunc('month', event_time AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' AS m
          FROM campaign_events_v8) AS months;
SELECT bi_ensure_partitions('campaign_events', 3);

INSERT INTO campaign_events SELECT * FROM campaign_events_v8;
DROP TABLE campaign_events_v8;

ALTER TABLE campaign_events ENABLE ROW LEVEL SECURITY;
ALTER TABLE campaign_events FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON campaign_events USING (tenant_id = app_tenant())
    WITH CHECK (tenant_id = app_tenant());
GRANT SELECT, INSERT ON campaign_events TO bi_data_app;

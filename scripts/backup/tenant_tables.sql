-- The tables that hold a tenant's rows, found from the catalog (so tables
-- added by later migrations are covered): every ordinary or partitioned
-- table with a tenant_id column, partitions left out (a partitioned table is
-- exported and imported once, through its parent). One row per table:
--   name      schema-qualified, quoted as SQL needs it
--   level     foreign-key depth: 0 references no other tenant table, a
--             table comes after every table it references (import order)
--   cols      the columns a COPY carries (generated columns are left out:
--             the target computes them again)
--   order_by  the primary key (collatable columns in "C" order, so two
--             clusters write the same bytes); the whole row when no key
-- Used by scripts/backup.sh tenant-export and tenant-import.
WITH RECURSIVE t AS (
    SELECT c.oid, format('%I.%I', n.nspname, c.relname) AS name
    FROM pg_class c
    JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE c.relkind IN ('r', 'p')
      AND NOT c.relispartition
      AND n.nspname NOT IN ('pg_catalog', 'information_schema')
      AND n.nspname NOT LIKE 'pg\_%'
      AND EXISTS (SELECT 1 FROM pg_attribute a
                  WHERE a.attrelid = c.oid AND a.attname = 'tenant_id'
                    AND a.attnum > 0 AND NOT a.attisdropped)
),
edge AS (
    -- child -> parent among tenant tables; self-references (companies'
    -- master_company_id) do not order tables.
    SELECT DISTINCT con.conrelid AS child, con.confrelid AS parent
    FROM pg_constraint con
    WHERE con.contype = 'f'
      AND con.conrelid <> con.confrelid
      AND con.conrelid IN (SELECT oid FROM t)
      AND con.confrelid IN (SELECT oid FROM t)
),
depth AS (
    SELECT oid, 0 AS d FROM t
    UNION ALL
    SELECT e.child, depth.d + 1
    FROM depth JOIN edge e ON e.parent = depth.oid
    WHERE depth.d < 64 -- a foreign-key cycle cannot loop forever
)
SELECT t.name,
       (SELECT max(d) FROM depth WHERE depth.oid = t.oid) AS level,
       (SELECT string_agg(quote_ident(a.attname), ',' ORDER BY a.attnum)
        FROM pg_attribute a
        WHERE a.attrelid = t.oid AND a.attnum > 0 AND NOT a.attisdropped
          AND a.attgenerated = '') AS cols,
       coalesce(
           (SELECT string_agg(quote_ident(a.attname)
                              || CASE WHEN a.attcollation <> 0 THEN ' COLLATE "C"' ELSE '' END,
                              ',' ORDER BY k.ord)
            FROM pg_index i
            CROSS JOIN LATERAL unnest(i.indkey::int2[]) WITH ORDINALITY AS k(attnum, ord)
            JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = k.attnum
            WHERE i.indrelid = t.oid AND i.indisprimary),
           'x::text COLLATE "C"') AS order_by
FROM t
ORDER BY level, t.name;

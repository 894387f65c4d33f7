-- Tables WITHOUT a tenant_id column whose rows would belong to a tenant
-- through a foreign key to a tenant table. bi-data has none (every table
-- leads its keys with tenant_id: migrations/V1__foundation.sql); a tenant
-- export refuses to run when one appears, rather than silently leaving its
-- rows behind. Used by scripts/backup.sh tenant-export.
SELECT DISTINCT format('%I.%I', n.nspname, c.relname)
FROM pg_constraint con
JOIN pg_class c ON c.oid = con.conrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE con.contype = 'f'
  AND NOT c.relispartition
  AND NOT EXISTS (SELECT 1 FROM pg_attribute a
                  WHERE a.attrelid = c.oid AND a.attname = 'tenant_id'
                    AND a.attnum > 0 AND NOT a.attisdropped)
  AND EXISTS (SELECT 1 FROM pg_attribute a
              WHERE a.attrelid = con.confrelid AND a.attname = 'tenant_id'
                AND a.attnum > 0 AND NOT a.attisdropped)
ORDER BY 1;

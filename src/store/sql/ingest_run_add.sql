UPDATE ingest_runs
   SET received = received + $3, inserted = inserted + $4, updated = updated + $5,
       unchanged = unchanged + $6, failed = failed + $7,
       errors = (SELECT coalesce(jsonb_agg(e ORDER BY (e ->> 'index')::bigint), '[]'::jsonb)
                   FROM (SELECT e FROM jsonb_array_elements(errors || $8) AS x (e)
                          ORDER BY (e ->> 'index')::bigint LIMIT $9) AS first),
       update_time = now(), revision = revision + 1
 WHERE tenant_id = $1 AND id = $2

UPDATE ingest_runs
   SET received = $3, inserted = $4, updated = $5, unchanged = $6, failed = $7, errors = $8,
       update_time = now(), revision = revision + 1
 WHERE tenant_id = $1 AND id = $2

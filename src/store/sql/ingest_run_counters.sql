UPDATE ingest_runs
   SET received = $3, inserted = $4, updated = $5, failed = $6, errors = $7,
       update_time = now(), revision = revision + 1
 WHERE tenant_id = $1 AND id = $2

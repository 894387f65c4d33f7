UPDATE ingest_runs
   SET end_time = now(), source_site = COALESCE(source_site, $3)
 WHERE tenant_id = $1 AND id = $2

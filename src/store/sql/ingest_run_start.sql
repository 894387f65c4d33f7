INSERT INTO ingest_runs (tenant_id, id, source_site) VALUES ($1, $2, $3)

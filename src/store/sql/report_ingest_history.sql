SELECT id, source_site, start_time, end_time,
       round(extract(epoch FROM end_time - start_time)::numeric, 3)::float8,
       received, inserted, updated, failed
  FROM ingest_runs
 WHERE {where}
 ORDER BY id DESC
 LIMIT {limit}

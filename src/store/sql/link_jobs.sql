WITH keyed AS (
    SELECT name_key, min(id::text)::uuid AS company_id, count(*) AS n
      FROM companies
     WHERE tenant_id = $1 AND delete_time IS NULL
     GROUP BY name_key
), todo AS (
    SELECT j.id, k.company_id
      FROM jobs j
      JOIN keyed k ON k.name_key = bi_company_key(j.company_name) AND k.n = 1
     WHERE j.tenant_id = $1 AND j.company_id IS NULL AND j.delete_time IS NULL
     ORDER BY j.id
     LIMIT $2
       FOR UPDATE OF j SKIP LOCKED
)
UPDATE jobs j
   SET company_id = todo.company_id, update_time = now(), revision = j.revision + 1
  FROM todo
 WHERE j.tenant_id = $1 AND j.id = todo.id
RETURNING j.id

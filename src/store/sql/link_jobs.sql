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
), live AS (
    -- The companies stay live until this commits: a concurrent merge or
    -- delete (FOR UPDATE) waits, or is waited for and its row re-checked.
    SELECT c.id
      FROM companies c
     WHERE c.tenant_id = $1 AND c.id IN (SELECT company_id FROM todo) AND c.delete_time IS NULL
       FOR KEY SHARE OF c
)
UPDATE jobs j
   SET company_id = todo.company_id, update_time = now(), revision = j.revision + 1
  FROM todo JOIN live ON live.id = todo.company_id
 WHERE j.tenant_id = $1 AND j.id = todo.id
RETURNING j.id

WITH keyed AS (
    SELECT name_key, count(*) AS n
      FROM companies
     WHERE tenant_id = $1 AND delete_time IS NULL
     GROUP BY name_key
)
SELECT count(*) FILTER (WHERE k.n > 1), count(*) FILTER (WHERE k.n = 1)
  FROM jobs j
  JOIN keyed k ON k.name_key = bi_company_key(j.company_name)
 WHERE j.tenant_id = $1 AND j.company_id IS NULL AND j.delete_time IS NULL

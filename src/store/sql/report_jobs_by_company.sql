SELECT company_name, company_id, id, title, location, industry, status, salary_min, salary_max,
       salary_currency, remote, posting_time, job_url
  FROM jobs
 WHERE {where}
 ORDER BY company_name, id
 LIMIT {limit}

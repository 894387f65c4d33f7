INSERT INTO idempotency_keys (tenant_id, request_id, method, response)
SELECT $1, u.request_id, u.method, u.response
  FROM unnest($2::text[], $3::text[], $4::bytea[]) AS u (request_id, method, response)
ON CONFLICT (tenant_id, request_id) DO UPDATE
SET method = EXCLUDED.method, response = EXCLUDED.response, create_time = now()

INSERT INTO idempotency_keys (tenant_id, request_id, method, response)
VALUES ($1, $2, $3, $4)
ON CONFLICT (tenant_id, request_id) DO UPDATE
SET method = EXCLUDED.method, response = EXCLUDED.response, create_time = now()

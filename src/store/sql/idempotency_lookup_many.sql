SELECT request_id, method, response FROM idempotency_keys
WHERE tenant_id = $1 AND request_id = ANY($2::text[]) AND create_time > now() - interval '24 hours'

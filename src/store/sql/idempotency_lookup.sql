SELECT method, response FROM idempotency_keys
WHERE tenant_id = $1 AND request_id = $2 AND create_time > now() - interval '24 hours'

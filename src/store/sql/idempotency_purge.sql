DELETE FROM idempotency_keys WHERE create_time < now() - interval '24 hours'

SELECT id, after FROM audit_events
WHERE tenant_id = $1 AND id = ANY ($2) AND after IS NOT NULL
  AND event_time > now() - interval '25 hours'

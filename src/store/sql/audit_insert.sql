INSERT INTO audit_events
    (tenant_id, id, actor, entity, entity_id, action, before, after, request_id, trace_id)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)

INSERT INTO audit_events
    (tenant_id, id, actor, entity, entity_id, action, before, after, request_id, trace_id)
SELECT $1, u.id, $2, u.entity, u.entity_id, u.action, u.before, u.after, u.request_id, u.trace_id
  FROM unnest($3::uuid[], $4::text[], $5::uuid[], $6::text[], $7::jsonb[], $8::jsonb[], $9::text[], $10::text[])
       AS u (id, entity, entity_id, action, before, after, request_id, trace_id)

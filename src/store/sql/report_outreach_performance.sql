SELECT c.id, c.company_id, co.name, c.opportunity_id, c.contact_method, c.status, c.sent_time,
       c.response_time, round((extract(epoch FROM c.response_time - c.sent_time) / 3600)::numeric, 3)::float8,
       e.opened, e.replied, e.interested, e.rejected
  FROM (SELECT * FROM campaigns WHERE {where} ORDER BY id LIMIT {limit}) AS c
  LEFT JOIN companies AS co ON co.tenant_id = c.tenant_id AND co.id = c.company_id
  LEFT JOIN LATERAL (
        SELECT count(*) FILTER (WHERE ev.event = 'OPENED') AS opened,
               count(*) FILTER (WHERE ev.event = 'REPLIED') AS replied,
               count(*) FILTER (WHERE ev.event = 'INTERESTED') AS interested,
               count(*) FILTER (WHERE ev.event = 'REJECTED') AS rejected
          FROM campaign_events AS ev
         WHERE ev.tenant_id = c.tenant_id AND ev.campaign_id = c.id) AS e ON TRUE
 ORDER BY c.id

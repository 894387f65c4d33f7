SELECT count(*) FILTER (WHERE e.event = 'SENT'),
       count(*) FILTER (WHERE e.event = 'OPENED'),
       count(*) FILTER (WHERE e.event = 'REPLIED'),
       count(*) FILTER (WHERE e.event = 'INTERESTED')
  FROM campaign_events AS e
 WHERE e.tenant_id = $1
   AND e.event IN ('SENT', 'OPENED', 'REPLIED', 'INTERESTED')
   {range}
   AND e.campaign_id IN (SELECT id FROM campaigns WHERE {campaigns})

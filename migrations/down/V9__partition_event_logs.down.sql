-- Down step of V9__partition_event_logs.sql: audit_events and campaign_events
-- become plain tables again, exactly as V1/V3/V8 left them (keys without the
-- partition key, same names, RLS, policy, grants), with every row of every
-- partition (the default one included) moved back; the partitions and the
-- maintenance functions are dropped.

------------------------------------------------------------------------------
-- audit_events
------------------------------------------------------------------------------
ALTER TABLE audit_events RENAME TO audit_events_v9;
ALTER TABLE audit_events_v9 RENAME CONSTRAINT audit_events_pkey TO audit_events_v9_pkey;
ALTER INDEX audit_events_time_idx RENAME TO audit_events_v9_time_idx;
ALTER INDEX audit_events_entity_idx RENAME TO audit_events_v9_entity_idx;
ALTER TABLE audit_events_v9 NO FORCE ROW LEVEL SECURITY;

CREATE TABLE audit_events (
    LIKE audit_events_v9 INCLUDING DEFAULTS INCLUDING COMPRESSION INCLUDING STORAGE,
    PRIMARY KEY (tenant_id, id)
);
CREATE INDEX audit_events_time_idx   ON audit_events (tenant_id, event_time, id);
CREATE INDEX audit_events_entity_idx ON audit_events (tenant_id, entity, entity_id, event_time);

INSERT INTO audit_events SELECT * FROM audit_events_v9;
DROP TABLE audit_events_v9; -- and its partitions

ALTER TABLE audit_events ENABLE ROW LEVEL SECURITY;
ALTER TABLE audit_events FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON audit_events USING (tenant_id = app_tenant())
    WITH CHECK (tenant_id = app_tenant());
GRANT SELECT, INSERT ON audit_events TO bi_data_app;

------------------------------------------------------------------------------
-- campaign_events
------------------------------------------------------------------------------
ALTER TABLE campaign_events RENAME TO campaign_events_v9;
ALTER TABLE campaign_events_v9 RENAME CONSTRAINT campaign_events_pkey TO campaign_events_v9_pkey;
ALTER TABLE campaign_events_v9 RENAME CONSTRAINT campaign_events_tenant_id_campaign_id_seq_key
    TO campaign_events_v9_seq_key;
ALTER TABLE campaign_events_v9 RENAME CONSTRAINT campaign_events_tenant_id_campaign_id_fkey
    TO campaign_events_v9_campaign_fkey;
ALTER INDEX campaign_events_time_idx RENAME TO campaign_events_v9_time_idx;
ALTER INDEX campaign_events_create_time_idx RENAME TO campaign_events_v9_create_time_idx;
ALTER TABLE campaign_events_v9 NO FORCE ROW LEVEL SECURITY;

CREATE TABLE campaign_events (
    LIKE campaign_events_v9 INCLUDING DEFAULTS INCLUDING COMPRESSION INCLUDING STORAGE,
    PRIMARY KEY (tenant_id, id),
    CONSTRAINT campaign_events_tenant_id_campaign_id_seq_key UNIQUE (tenant_id, campaign_id, seq),
    CONSTRAINT campaign_events_tenant_id_campaign_id_fkey FOREIGN KEY (tenant_id, campaign_id)
        REFERENCES campaigns (tenant_id, id)
);
CREATE INDEX campaign_events_time_idx ON campaign_events (tenant_id, event_time, event);
CREATE INDEX campaign_events_create_time_idx ON campaign_events (tenant_id, create_time, id);

INSERT INTO campaign_events SELECT * FROM campaign_events_v9;
DROP TABLE campaign_events_v9;

ALTER TABLE campaign_events ENABLE ROW LEVEL SECURITY;
ALTER TABLE campaign_events FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON campaign_events USING (tenant_id = app_tenant())
    WITH CHECK (tenant_id = app_tenant());
GRANT SELECT, INSERT ON campaign_events TO bi_data_app;

------------------------------------------------------------------------------
-- The maintenance functions
------------------------------------------------------------------------------
DROP FUNCTION bi_drop_partitions_before(regclass, integer);
DROP FUNCTION bi_ensure_partitions(regclass, integer);
DROP FUNCTION bi_partition_month(regclass, timestamptz);

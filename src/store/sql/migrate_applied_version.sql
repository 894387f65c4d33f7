SELECT COALESCE(max(version), 0)::bigint FROM refinery_schema_history

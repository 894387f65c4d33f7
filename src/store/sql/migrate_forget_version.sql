DELETE FROM refinery_schema_history WHERE version = $1

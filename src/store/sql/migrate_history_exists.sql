SELECT to_regclass('refinery_schema_history') IS NOT NULL

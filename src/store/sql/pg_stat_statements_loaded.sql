SELECT to_regclass('pg_stat_statements') IS NOT NULL AND EXISTS (SELECT 1 FROM pg_settings WHERE name = 'pg_stat_statements.max')

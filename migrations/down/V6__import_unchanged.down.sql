-- Undoes V6__import_unchanged.sql. The `unchanged` counts of past runs are
-- lost (before V6 such rows were counted `updated`; they are not added back).
ALTER TABLE ingest_runs DROP COLUMN unchanged;

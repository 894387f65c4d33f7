-- ImportJobs counts rows identical to the live row they matched as
-- `unchanged` (not rewritten, no index maintenance) apart from `updated`
-- (matched and rewritten). Existing runs keep their counts: before this
-- version every match was counted `updated`.
ALTER TABLE ingest_runs ADD COLUMN unchanged bigint NOT NULL DEFAULT 0;

SELECT (pg_last_wal_replay_lsn() - '0/0'::pg_lsn)::bigint

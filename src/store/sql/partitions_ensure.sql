SELECT name FROM bi_ensure_partitions($1::text::regclass, $2) AS name

SELECT partition, range_from, range_to, row_count FROM bi_drop_partitions_before($1::text::regclass, $2)

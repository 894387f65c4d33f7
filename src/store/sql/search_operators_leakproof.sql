SELECT count(*) = 4 AND bool_and(proleakproof) FROM pg_proc WHERE (proname, pronargs) IN (('similarity_op', 2), ('ts_match_vq', 2), ('jsonb_contains', 2), ('jsonb_exists', 2))

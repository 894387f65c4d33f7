SELECT set_config('pg_trgm.similarity_threshold', $1, true)

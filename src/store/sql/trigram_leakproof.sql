SELECT proleakproof FROM pg_proc WHERE proname = 'similarity_op' AND pronargs = 2

SELECT query, calls, mean_exec_time, max_exec_time, total_exec_time, rows
  FROM pg_stat_statements
 WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
   AND userid = (SELECT oid FROM pg_roles WHERE rolname = current_user)
   AND query NOT LIKE '%pg_stat_statements%'
 ORDER BY total_exec_time DESC
 LIMIT $1

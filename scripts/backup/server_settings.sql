-- Settings a restore of this cluster must carry, as postgresql.conf lines,
-- saved with each base backup (server.conf) and appended to the restored
-- cluster's postgresql.auto.conf by scripts/backup.sh restore:
--   * the ones recovery refuses to run below the primary's values ("recovery
--     aborted because of insufficient parameter settings"), always;
--   * every other setting given on the server's command line (pg_ctl -o,
--     systemd units): a base backup copies postgresql.conf and
--     postgresql.auto.conf but not the command line. The cluster's own
--     location (port, sockets, files) is left out: the restore sets its own.
SELECT format('%s = %L', name, current_setting(name))
FROM pg_settings
WHERE name IN ('max_connections', 'max_worker_processes', 'max_wal_senders',
               'max_prepared_transactions', 'max_locks_per_transaction')
   OR (source = 'command line'
       AND name NOT IN ('port', 'listen_addresses', 'unix_socket_directories', 'data_directory',
                        'config_file', 'hba_file', 'ident_file', 'external_pid_file'))
ORDER BY name;

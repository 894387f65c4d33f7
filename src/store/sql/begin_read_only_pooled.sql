BEGIN READ ONLY; SET LOCAL ROLE bi_data_app; SET LOCAL client_connection_check_interval = 1000

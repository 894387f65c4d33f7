SELECT set_config('lock_timeout', $1, true), set_config('statement_timeout', $2, true),
       set_config('app.tenant_id', $3, true)

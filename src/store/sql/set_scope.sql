SELECT set_config('app.tenant_id', $1, true), set_config('statement_timeout', $2, true)

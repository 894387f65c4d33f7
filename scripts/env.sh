# shellcheck shell=bash
# Source me (bash or zsh) after scripts/dev-env.sh:
#
#   source scripts/env.sh
#
# Sets the local development environment of bi-data. The database password
# "bi_data" is a local dev/test value set up by scripts/dev-env.sh; never use
# it anywhere else. Safe to source repeatedly (PATH gets .tools/bin once).

if [ -n "${BASH_SOURCE:-}" ]; then
    _bi_data_env_src=${BASH_SOURCE[0]}
elif [ -n "${ZSH_VERSION:-}" ]; then
    eval '_bi_data_env_src=${(%):-%x}'
else
    _bi_data_env_src=scripts/env.sh # other shells: source from the repo root
fi
_bi_data_root=$(cd "$(dirname "$_bi_data_env_src")/.." && pwd)
unset _bi_data_env_src

case ":$PATH:" in
*":$_bi_data_root/.tools/bin:"*) ;;
*) export PATH="$_bi_data_root/.tools/bin:$PATH" ;;
esac

export DATABASE_URL="postgres://bi_data_owner:bi_data@127.0.0.1:5432/bi_data"
# No MIGRATION_DATABASE_URL: it defaults to --database-url, and exporting it
# would make a server started with another --database-url migrate this one.
unset MIGRATION_DATABASE_URL
export TEST_DATABASE_URL="postgres://bi_data_owner:bi_data@127.0.0.1:5432/bi_data_test"
export REDIS_URL="redis://127.0.0.1:6379"
export GRPCURL="$_bi_data_root/.tools/bin/grpcurl"
export BUF="$_bi_data_root/.tools/bin/buf"
export PYTHON="$_bi_data_root/.tools/venv/bin/python"
unset _bi_data_root

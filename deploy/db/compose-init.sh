#!/usr/bin/env bash
# Run by the postgres image on its first start (docker-compose.yml): one role
# per service, with PARLEY_DB_PASSWORD (the superuser keeps its own).
set -euo pipefail
/parley/provision.sh "postgresql://postgres@/$POSTGRES_DB" "${PARLEY_DB_PASSWORD:?PARLEY_DB_PASSWORD must be set}"

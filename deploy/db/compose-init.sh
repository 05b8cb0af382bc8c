#!/usr/bin/env bash
# Run by the postgres image on first start (docker-compose.yml).
set -euo pipefail
/parley/provision.sh "postgresql://postgres@/$POSTGRES_DB" "${POSTGRES_PASSWORD}"

#!/usr/bin/env bash
# Provisions a database for Parley (DESIGN §1, §4): one login role per
# service (no superuser, no BYPASSRLS) allowed to create its own schema in
# the database, and the extensions the services use (a non-superuser cannot
# create them). Idempotent. Each service then applies its own migrations as
# its own role on start, and owns its schema; no role has any privilege on
# another's schema.
#
#   deploy/db/provision.sh <superuser libpq URL> [password]
#
# With a password the roles get it (for TCP password auth); without one they
# have none (trust or peer auth, as the local runner uses).
set -euo pipefail
url=${1:?usage: provision.sh <superuser URL> [password]}
pass=${2:-}
db=$(psql "$url" -XAtc 'SELECT current_database()')
sql="CREATE EXTENSION IF NOT EXISTS pg_trgm; CREATE EXTENSION IF NOT EXISTS pgcrypto;"
for svc in tenants billing agents messaging analytics; do
	sql+="
DO \$\$ BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'parley_$svc') THEN
    CREATE ROLE parley_$svc LOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE;
  END IF;
END \$\$;
GRANT CONNECT, CREATE ON DATABASE \"$db\" TO parley_$svc;"
	if [ -n "$pass" ]; then
		sql+="
ALTER ROLE parley_$svc PASSWORD '$(printf '%s' "$pass" | sed "s/'/''/g")';"
	fi
done
psql "$url" -X -q -v ON_ERROR_STOP=1 <<<"$sql"

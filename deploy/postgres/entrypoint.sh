#!/usr/bin/env bash
# deploy/postgres/Dockerfile's entrypoint: on an empty data directory,
# initdb (password auth over TCP, POSTGRES_PASSWORD for the superuser),
# create POSTGRES_DB, run /docker-entrypoint-initdb.d/*.sh against a server
# on the Unix socket only; then run PostgreSQL in the foreground.
set -euo pipefail
: "${PGDATA:=/var/lib/postgresql/data}"
if [ "${1:-postgres}" != postgres ]; then exec "$@"; fi
if [ ! -s "$PGDATA/PG_VERSION" ]; then
	: "${POSTGRES_PASSWORD:?POSTGRES_PASSWORD must be set}"
	pwfile=$(mktemp)
	printf '%s\n' "$POSTGRES_PASSWORD" >"$pwfile"
	initdb -D "$PGDATA" -U postgres -E UTF8 --locale=C.UTF-8 \
		--auth-local=trust --auth-host=scram-sha-256 --pwfile="$pwfile" >/dev/null
	rm -f "$pwfile"
	echo "host all all all scram-sha-256" >>"$PGDATA/pg_hba.conf"
	pg_ctl -D "$PGDATA" -w -o "-c listen_addresses='' -k /var/run/postgresql" start >/dev/null
	db=${POSTGRES_DB:-postgres}
	if [ "$db" != postgres ]; then
		psql -X -q -v ON_ERROR_STOP=1 -U postgres -d postgres \
			-c "CREATE DATABASE \"$db\""
	fi
	for f in /docker-entrypoint-initdb.d/*.sh; do
		[ -e "$f" ] || continue
		echo "running $f"
		bash "$f"
	done
	pg_ctl -D "$PGDATA" -m fast -w stop >/dev/null
	echo "database initialised"
fi
shift || true
exec postgres -D "$PGDATA" -c listen_addresses='*' -k /var/run/postgresql "$@"

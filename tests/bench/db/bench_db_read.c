// A page read in text and in binary results, in the same run: the shape of
// ListConversations (21 rows of a conversation joined with its contact: 7
// uuids, 10 timestamps (and the window computed from one), the rest text,
// row-level security on both tables as the services have it), read with
// pl_db_read and pl_db_read_binary and every value taken as the service takes
// it (pl_db_text, pl_db_ts_at, pl_db_int). Prints, per page, the wall time of
// one caller and the CPU of PostgreSQL and of this process, and the ratios
// binary / text.
//
//   bench_db_read [pages per round = 3000] [rounds = 3]
//
// The rounds alternate text and binary, so that a drift of the machine
// falls on both; the figures are each mode's best round.
//
// With PGH_CALLGRIND=1 (valgrind installed), PostgreSQL runs under callgrind
// and the bench prints instead the instructions of its backend a page in
// each mode: the same figure in every run on the same data, whatever else
// the machine does (see tests/bench/README.md). Pages are ~50 times slower
// there: give a few hundred.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "pgh.h"
#include "pl/arena.h"
#include "pl/db.h"

#define TENANT "01a20c96-29b7-7685-b452-2f962182d85d"
#define POLICY                                                                 \
	"(SELECT current_setting('parley.tenant_id', true) = '*') OR "         \
	"tenant_id = (SELECT CASE WHEN length(x.s) = 36 THEN x.s::uuid END "   \
	"FROM (SELECT current_setting('parley.tenant_id', true)) AS x(s))"

static const char schema[] =
        "CREATE ROLE app LOGIN;"
        "CREATE TABLE contacts (tenant_id uuid, id uuid, channel_id uuid,"
        " external_id text, kind text, phone text, name text, language "
        "text, profile jsonb, tags text[], custom_fields jsonb, opted_out_at "
        "timestamptz, created_at timestamptz, updated_at timestamptz,"
        " PRIMARY KEY (tenant_id, id));"
        "CREATE TABLE conversations (tenant_id uuid, id uuid, contact_id "
        "uuid, channel_id uuid, agent_id uuid, status text, owner text,"
        " assigned_user_id uuid, stage text, message_count bigint,"
        " last_inbound_at timestamptz, last_outbound_at timestamptz,"
        " last_bot_message_at timestamptz, closed_at timestamptz,"
        " created_at timestamptz, updated_at timestamptz, last_activity_at "
        "timestamptz, PRIMARY KEY (tenant_id, id));"
        "CREATE INDEX conversations_list ON conversations (tenant_id,"
        " last_activity_at DESC, id DESC);"
        "INSERT INTO contacts SELECT '" TENANT "', md5('k' || i)::uuid,"
        " md5('ch')::uuid, '3400' || i, 'phone', '+3400' || i, 'Customer '"
        " || i, 'en', '{\"name\": \"Customer\"}', '{}', '{}', NULL, now(),"
        " now() FROM generate_series(1, 2000) i;"
        "INSERT INTO conversations SELECT '" TENANT "', md5('c' || i)::uuid,"
        " md5('k' || i)::uuid, md5('ch')::uuid, md5('a')::uuid, 'open',"
        " 'bot', NULL, 'new', 2, now() - i * interval '1 s', now(), now(),"
        " NULL, now(), now(), now() - i * interval '1 s'"
        " FROM generate_series(1, 2000) i;"
        "ALTER TABLE contacts ENABLE ROW LEVEL SECURITY;"
        "ALTER TABLE contacts FORCE ROW LEVEL SECURITY;"
        "ALTER TABLE conversations ENABLE ROW LEVEL SECURITY;"
        "ALTER TABLE conversations FORCE ROW LEVEL SECURITY;"
        "CREATE POLICY t ON contacts USING (" POLICY ");"
        "CREATE POLICY t ON conversations USING (" POLICY ");"
        "GRANT SELECT ON contacts, conversations TO app;"
        "ANALYZE contacts; ANALYZE conversations;";

static const char page[] =
        "SELECT c.id, c.contact_id, c.channel_id, c.agent_id, c.status,"
        " c.owner, c.assigned_user_id, c.stage, c.message_count,"
        " c.last_inbound_at, c.last_outbound_at, c.last_bot_message_at,"
        " c.closed_at, c.created_at,"
        " c.updated_at, k.id, k.channel_id, k.external_id, k.kind, k.phone,"
        " k.name, k.language, k.profile::text, k.tags, k.custom_fields::text,"
        " k.opted_out_at, k.created_at, k.updated_at, c.last_activity_at"
        " FROM conversations c JOIN contacts k ON k.tenant_id = c.tenant_id"
        " AND k.id = c.contact_id WHERE c.tenant_id = $1"
        " ORDER BY c.last_activity_at DESC, c.id DESC LIMIT $2::int";

// Column kinds of page: t text, u uuid, s timestamp, i integer, a text[].
static const char kinds[] = "uuuuttuti"  // c.id .. c.message_count
                            "ssssss"     // c.last_inbound_at .. updated_at
                            "uuttttttat" // k.id .. k.custom_fields
                            "ssss";      // k.opted_out_at .. last_activity

static double
now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static double
self_cpu_s(void)
{
	struct rusage ru;
	getrusage(RUSAGE_SELF, &ru);
	return (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 +
	       (double)ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6;
}

typedef struct figures {
	double wall_us, pg_us, self_us;
} figures;

// n pages in one mode; false when a read failed or gave another page.
static bool
run(pgh *h, pl_db *db, bool binary, int n, figures *f)
{
	const char *p[2] = { TENANT, "21" };
	double w0 = now_s(), pg0 = pgh_cpu_s(h), s0 = self_cpu_s();
	size_t chars = 0;
	pl_arena a;

	pl_arena_init(&a, 0, 0);
	for (int i = 0; i < n; i++) {
		PGresult *r = binary ? pl_db_read_binary(db, TENANT, page, 2, p)
		                     : pl_db_read(db, TENANT, page, 2, p);
		if (pl_db_result_status(r) != PL_OK || PQntuples(r) != 21 ||
		    PQnfields(r) != (int)sizeof(kinds) - 1) {
			fprintf(stderr, "page read failed\n");
			PQclear(r);
			pl_arena_fini(&a);
			return false;
		}
		for (int row = 0; row < 21; row++)
			for (int col = 0; col < PQnfields(r); col++) {
				char **items;
				size_t k;
				switch (kinds[col]) {
				case 's':
					chars += strlen(
					        pl_db_ts_at(&a, r, row, col));
					if (col == 9) // the service's window
						chars += strlen(pl_db_ts_add(
						        &a, r, row, col,
						        86400));
					break;
				case 'i':
					chars += (size_t)pl_db_int(r, row, col);
					break;
				case 'a':
					pl_db_text_array(&a, r, row, col,
					                 &items, &k);
					chars += k;
					break;
				default:
					chars += strlen(
					        pl_db_text(&a, r, row, col));
				}
			}
		PQclear(r);
		pl_arena_reset(&a);
	}
	pl_arena_fini(&a);
	f->wall_us = (now_s() - w0) * 1e6 / n;
	f->pg_us = (pgh_cpu_s(h) - pg0) * 1e6 / n;
	f->self_us = (self_cpu_s() - s0) * 1e6 / n;
	return chars > 0;
}

// The instructions callgrind counted for backend pid (its file is written
// when the backend exits), or -1.
static long long
backend_total(const pgh *h, long pid)
{
	char path[128], line[256];
	long long total = -1;

	snprintf(path, sizeof(path), "%s/cg.%ld", h->dir, pid);
	for (int i = 0; i < 600 && total < 0; i++) {
		FILE *f = fopen(path, "r");
		while (f != NULL && fgets(line, sizeof(line), f) != NULL)
			if (strncmp(line, "totals:", 7) == 0)
				total = atoll(line + 7);
		if (f != NULL)
			fclose(f);
		if (total < 0)
			usleep(100000);
	}
	return total;
}

// The instructions of a fresh connection's backend that reads n pages in
// one mode and exits, or -1.
static long long
session_instructions(pgh *h, const char *url, bool binary, int n)
{
	pl_db *db = pl_db_open(url);
	PGresult *r;
	figures f;
	long pid = -1;

	if (db == NULL)
		return -1;
	r = pl_db_exec(db, "SELECT pg_backend_pid()", 0, NULL);
	if (r != NULL && PQresultStatus(r) == PGRES_TUPLES_OK &&
	    PQntuples(r) == 1)
		pid = atol(PQgetvalue(r, 0, 0));
	PQclear(r);
	if (pid < 0 || !run(h, db, binary, n, &f)) {
		pl_db_close(db);
		return -1;
	}
	pl_db_close(db);
	return backend_total(h, pid);
}

// PostgreSQL's instructions a page in each mode: two sessions a mode, of
// FEW and of FEW + n pages; the difference leaves out connecting, planning
// and the caches' first fill.
#define FEW 20
static int
count_instructions(pgh *h, const char *url, int n)
{
	double per[2];

	for (int k = 0; k < 2; k++) {
		long long a = session_instructions(h, url, k == 1, FEW);
		long long b = session_instructions(h, url, k == 1, FEW + n);
		if (a < 0 || b < 0) {
			fprintf(stderr, "no callgrind count for a backend\n");
			return 1;
		}
		per[k] = (double)(b - a) / n;
	}
	printf("page of 21 rows x 29 columns, PostgreSQL under callgrind, "
	       "(%d + %d pages) - %d pages a mode:\n",
	       FEW, n, FEW);
	for (int k = 0; k < 2; k++)
		printf("  %-6s: %9.0f instructions of PostgreSQL a page\n",
		       k ? "binary" : "text", per[k]);
	printf("  binary / text: %.2f\n", per[1] / per[0]);
	return 0;
}

int
main(int argc, char **argv)
{
	int n = argc > 1 ? atoi(argv[1]) : 3000;
	int rounds = argc > 2 ? atoi(argv[2]) : 3;
	figures best[2] = { { 1e9, 1e9, 1e9 }, { 1e9, 1e9, 1e9 } };
	char url[PGH_URL_MAX];
	pl_db *db;
	pgh h;
	int rc;

	if (n < 1 || n > 1000000 || rounds < 1 || rounds > 100) {
		fprintf(stderr, "usage: bench_db_read [pages] [rounds]\n");
		return 2;
	}
	if ((rc = pgh_start(&h)) != 0)
		return rc == -1 ? 0 : 1; // no PostgreSQL here: nothing to say
	if (pgh_exec(&h, schema) != 0 ||
	    pgh_url(&h, "app", "postgres", url, sizeof(url)) != 0 ||
	    (db = pl_db_open(url)) == NULL) {
		pgh_stop(&h);
		return 1;
	}
	if (pgh_callgrind(&h)) {
		pl_db_close(db);
		rc = count_instructions(&h, url, n);
		pgh_stop(&h);
		return rc;
	}
	for (int k = 0; k < 2; k++) { // warm: connect, prepare, cache
		figures f;
		if (!run(&h, db, k == 1, 200, &f))
			return 1;
	}
	for (int i = 0; i < rounds; i++)
		for (int k = 0; k < 2; k++) {
			figures f;
			if (!run(&h, db, k == 1, n, &f))
				return 1;
			if (f.wall_us < best[k].wall_us)
				best[k].wall_us = f.wall_us;
			if (f.pg_us < best[k].pg_us)
				best[k].pg_us = f.pg_us;
			if (f.self_us < best[k].self_us)
				best[k].self_us = f.self_us;
		}
	printf("page of 21 rows x 29 columns (7 uuids, 10 timestamps), %d "
	       "pages a round, best of %d rounds:\n",
	       n, rounds);
	for (int k = 0; k < 2; k++)
		printf("  %-6s: %6.1f us a page (one caller), PostgreSQL %6.1f "
		       "us CPU, reader %6.1f us CPU\n",
		       k ? "binary" : "text", best[k].wall_us, best[k].pg_us,
		       best[k].self_us);
	printf("  binary / text: time %.2f, PostgreSQL CPU %.2f, reader CPU "
	       "%.2f\n",
	       best[1].wall_us / best[0].wall_us, best[1].pg_us / best[0].pg_us,
	       best[1].self_us / best[0].self_us);
	pl_db_close(db);
	pgh_stop(&h);
	return 0;
}

// Migrations per service (see pl/migrate.h and DESIGN §4).
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <sodium.h>

#include "pl/migrate.h"

#define MAX_FILE_SIZE   (16u << 20)
#define MAX_MIGRATIONS  999
#define MAX_SCHEMA_NAME 63

static void seterr(char *err, size_t errlen, const char *fmt, ...)
        __attribute__((format(printf, 3, 4)));

static void
seterr(char *err, size_t errlen, const char *fmt, ...)
{
	if (err == NULL || errlen == 0)
		return;
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
}

// "NNN_name.sql" with name in [a-z0-9_]+; returns NNN or -1.
static int
name_version(const char *name)
{
	size_t len = strlen(name);
	if (len < 9 || strcmp(name + len - 4, ".sql") != 0)
		return -1;
	for (int i = 0; i < 3; i++)
		if (!isdigit((unsigned char)name[i]))
			return -1;
	if (name[3] != '_')
		return -1;
	for (size_t i = 4; i < len - 4; i++) {
		char c = name[i];
		if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
		      c == '_'))
			return -1;
	}
	int v = (name[0] - '0') * 100 + (name[1] - '0') * 10 + (name[2] - '0');
	return v > 0 ? v : -1;
}

void
pl_migrate_free(pl_migration *m, size_t n)
{
	if (m == NULL)
		return;
	for (size_t i = 0; i < n; i++) {
		free(m[i].name);
		free(m[i].sql);
	}
	free(m);
}

static int
cmp_migration(const void *a, const void *b)
{
	const pl_migration *x = a, *y = b;
	return strcmp(x->name, y->name);
}

static int
read_file(const char *path, char **out, size_t *len, char *err, size_t errlen)
{
	FILE *f = fopen(path, "rb");
	if (f == NULL) {
		seterr(err, errlen, "could not open %s: %s", path,
		       strerror(errno));
		return -1;
	}
	struct stat st;
	if (fstat(fileno(f), &st) != 0 || !S_ISREG(st.st_mode)) {
		seterr(err, errlen, "could not read %s: not a regular file",
		       path);
		fclose(f);
		return -1;
	}
	if ((unsigned long long)st.st_size > MAX_FILE_SIZE) {
		seterr(err, errlen, "could not read %s: larger than %u bytes",
		       path, MAX_FILE_SIZE);
		fclose(f);
		return -1;
	}
	size_t cap = (size_t)st.st_size;
	char *buf = malloc(cap + 1);
	if (buf == NULL) {
		seterr(err, errlen, "could not read %s: out of memory", path);
		fclose(f);
		return -1;
	}
	size_t n = fread(buf, 1, cap, f);
	bool bad = ferror(f) != 0;
	fclose(f);
	if (bad || n != cap) {
		seterr(err, errlen, "could not read %s: short read", path);
		free(buf);
		return -1;
	}
	buf[n] = '\0';
	if (memchr(buf, '\0', n) != NULL) {
		seterr(err, errlen, "could not read %s: contains a NUL byte",
		       path);
		free(buf);
		return -1;
	}
	*out = buf;
	*len = n;
	return 0;
}

int
pl_migrate_load_dir(const char *dir, pl_migration **out, size_t *n, char *err,
                    size_t errlen)
{
	*out = NULL;
	*n = 0;
	if (dir == NULL) {
		seterr(err, errlen, "no migrations directory given");
		return -1;
	}
	DIR *d = opendir(dir);
	if (d == NULL) {
		seterr(err, errlen,
		       "could not open migrations directory %s: %s", dir,
		       strerror(errno));
		return -1;
	}
	pl_migration *m = NULL;
	size_t cnt = 0, cap = 0;
	struct dirent *de;
	int rc = -1;
	while ((de = readdir(d)) != NULL) {
		const char *name = de->d_name;
		size_t len = strlen(name);
		if (name[0] == '.')
			continue; // ".", "..", editor and hidden files
		if (len < 4 || strcmp(name + len - 4, ".sql") != 0)
			continue; // README and friends
		if (name_version(name) < 0) {
			seterr(err, errlen,
			       "bad migration file name %s: want NNN_name.sql "
			       "with name in [a-z0-9_]",
			       name);
			goto out_free;
		}
		if (cnt == MAX_MIGRATIONS) {
			seterr(err, errlen, "too many migrations in %s", dir);
			goto out_free;
		}
		if (cnt == cap) {
			size_t ncap = cap ? cap * 2 : 16;
			pl_migration *nm = realloc(m, ncap * sizeof(*m));
			if (nm == NULL) {
				seterr(err, errlen, "out of memory");
				goto out_free;
			}
			m = nm;
			cap = ncap;
		}
		pl_migration *e = &m[cnt];
		memset(e, 0, sizeof(*e));
		e->name = strdup(name);
		if (e->name == NULL) {
			seterr(err, errlen, "out of memory");
			goto out_free;
		}
		cnt++;
		size_t plen = strlen(dir) + 1 + len + 1;
		char *path = malloc(plen);
		if (path == NULL) {
			seterr(err, errlen, "out of memory");
			goto out_free;
		}
		snprintf(path, plen, "%s/%s", dir, name);
		int r = read_file(path, &e->sql, &e->len, err, errlen);
		free(path);
		if (r != 0)
			goto out_free;
	}
	if (cnt > 0)
		qsort(m, cnt, sizeof(*m), cmp_migration);
	for (size_t i = 0; i < cnt; i++) {
		int v = name_version(m[i].name);
		if (i > 0 && v == name_version(m[i - 1].name)) {
			seterr(err, errlen,
			       "duplicate migration number %03d: %s and %s", v,
			       m[i - 1].name, m[i].name);
			goto out_free;
		}
		if (v != (int)i + 1) {
			seterr(err, errlen,
			       "migration %03d is missing (next file is %s)",
			       (int)i + 1, m[i].name);
			goto out_free;
		}
	}
	*out = m;
	*n = cnt;
	m = NULL;
	cnt = 0;
	rc = 0;
out_free:
	pl_migrate_free(m, cnt);
	closedir(d);
	return rc;
}

static bool
valid_schema(const char *s)
{
	if (s == NULL || !((*s >= 'a' && *s <= 'z') || *s == '_'))
		return false;
	size_t n = 0;
	for (; s[n] != '\0'; n++) {
		char c = s[n];
		if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
		      c == '_'))
			return false;
	}
	return n <= MAX_SCHEMA_NAME;
}

// The files must be 001.. in order, as pl_migrate_load_dir makes them.
static int
check_list(const pl_migration *m, size_t n, char *err, size_t errlen)
{
	if (n > 0 && m == NULL) {
		seterr(err, errlen, "no migrations given");
		return -1;
	}
	for (size_t i = 0; i < n; i++) {
		if (m[i].name == NULL || m[i].sql == NULL) {
			seterr(err, errlen, "migration %zu has no name or sql",
			       i + 1);
			return -1;
		}
		if (name_version(m[i].name) != (int)i + 1) {
			seterr(err, errlen,
			       "migration %s is out of place: expected number "
			       "%03zu",
			       m[i].name, i + 1);
			return -1;
		}
		if (memchr(m[i].sql, '\0', m[i].len) != NULL) {
			seterr(err, errlen, "migration %s contains a NUL byte",
			       m[i].name);
			return -1;
		}
	}
	return 0;
}

static int
checksum(const pl_migration *m, char hex[65])
{
	unsigned char h[crypto_hash_sha256_BYTES];
	if (sodium_init() < 0)
		return -1;
	crypto_hash_sha256(h, (const unsigned char *)m->sql, m->len);
	sodium_bin2hex(hex, 65, h, sizeof(h));
	return 0;
}

static const char *
pgmsg(PGconn *c, const PGresult *r)
{
	const char *m = r != NULL ? PQresultErrorMessage(r) : NULL;
	if (m == NULL || *m == '\0')
		m = PQerrorMessage(c);
	return m;
}

// Trims libpq's trailing newline for messages.
static int
pglen(const char *m)
{
	size_t n = strlen(m);
	while (n > 0 && (m[n - 1] == '\n' || m[n - 1] == ' '))
		n--;
	return (int)n;
}

static bool
ok(const PGresult *r)
{
	ExecStatusType s = r != NULL ? PQresultStatus(r) : PGRES_FATAL_ERROR;
	return s == PGRES_COMMAND_OK || s == PGRES_TUPLES_OK ||
	       s == PGRES_EMPTY_QUERY;
}

// Runs a command; returns 0 or -1 with err "could not <what>: <message>".
static int
run(PGconn *c, const char *sql, int np, const char *const *p, const char *what,
    char *err, size_t errlen)
{
	PGresult *r = PQexecParams(c, sql, np, NULL, p, NULL, NULL, 0);
	int rc = 0;
	if (!ok(r)) {
		const char *m = pgmsg(c, r);
		seterr(err, errlen, "could not %s: %.*s", what, pglen(m), m);
		rc = -1;
	}
	PQclear(r);
	return rc;
}

typedef struct applied {
	int version;
	char *name;
	char *checksum;
} applied;

static void
free_applied(applied *a, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		free(a[i].name);
		free(a[i].checksum);
	}
	free(a);
}

// Reads <schema>.schema_migrations; a missing table gives none.
static int
read_applied(PGconn *c, const char *qschema, applied **out, size_t *n,
             char *err, size_t errlen)
{
	*out = NULL;
	*n = 0;
	char reg[MAX_SCHEMA_NAME * 2 + 40];
	snprintf(reg, sizeof(reg), "%s.schema_migrations", qschema);
	const char *p[1] = { reg };
	PGresult *r = PQexecParams(c, "SELECT to_regclass($1) IS NOT NULL", 1,
	                           NULL, p, NULL, NULL, 0);
	if (!ok(r) || PQntuples(r) != 1) {
		const char *m = pgmsg(c, r);
		seterr(err, errlen, "could not read applied migrations: %.*s",
		       pglen(m), m);
		PQclear(r);
		return -1;
	}
	bool exists = strcmp(PQgetvalue(r, 0, 0), "t") == 0;
	PQclear(r);
	if (!exists)
		return 0;

	char sql[MAX_SCHEMA_NAME * 2 + 100];
	snprintf(sql, sizeof(sql),
	         "SELECT version, name, checksum FROM %s.schema_migrations "
	         "ORDER BY version",
	         qschema);
	r = PQexecParams(c, sql, 0, NULL, NULL, NULL, NULL, 0);
	if (!ok(r)) {
		const char *m = pgmsg(c, r);
		seterr(err, errlen, "could not read applied migrations: %.*s",
		       pglen(m), m);
		PQclear(r);
		return -1;
	}
	size_t rows = (size_t)PQntuples(r);
	applied *a = calloc(rows ? rows : 1, sizeof(*a));
	if (a == NULL) {
		seterr(err, errlen, "out of memory");
		PQclear(r);
		return -1;
	}
	for (size_t i = 0; i < rows; i++) {
		a[i].version = atoi(PQgetvalue(r, (int)i, 0));
		a[i].name = strdup(PQgetvalue(r, (int)i, 1));
		a[i].checksum = strdup(PQgetvalue(r, (int)i, 2));
		if (a[i].name == NULL || a[i].checksum == NULL) {
			seterr(err, errlen, "out of memory");
			free_applied(a, i + 1);
			PQclear(r);
			return -1;
		}
	}
	PQclear(r);
	*out = a;
	*n = rows;
	return 0;
}

// Compares what is applied with the files. Sets done[i] for applied files.
// Versions past the files (a newer release ran) are fine: the additive
// policy keeps older code working on a newer schema.
static int
compare(const pl_migration *m, size_t n, const applied *a, size_t na,
        bool *done, char *err, size_t errlen)
{
	for (size_t i = 0; i < na; i++) {
		int v = a[i].version;
		if (v < 1 || (size_t)v > n)
			continue;
		const pl_migration *f = &m[v - 1];
		if (strcmp(a[i].name, f->name) != 0) {
			seterr(err, errlen,
			       "migration %03d was applied as %s but the file "
			       "is now %s",
			       v, a[i].name, f->name);
			return -1;
		}
		char hex[65];
		if (checksum(f, hex) != 0) {
			seterr(err, errlen, "could not initialise libsodium");
			return -1;
		}
		if (strcmp(hex, a[i].checksum) != 0) {
			seterr(err, errlen,
			       "migration %s was changed after it was applied "
			       "(checksum %.12s... in the database, %.12s... "
			       "on disk)",
			       f->name, a[i].checksum, hex);
			return -1;
		}
		done[v - 1] = true;
	}
	return 0;
}

static int
apply_one(PGconn *c, const char *qschema, const pl_migration *f, char *err,
          size_t errlen)
{
	char what[320];
	char hex[65];
	if (checksum(f, hex) != 0) {
		seterr(err, errlen, "could not initialise libsodium");
		return -1;
	}
	snprintf(what, sizeof(what), "apply %s", f->name);
	if (run(c, "BEGIN", 0, NULL, what, err, errlen) != 0)
		return -1;
	// Unqualified names in the file land in the service's schema.
	char path[MAX_SCHEMA_NAME * 2 + 20];
	snprintf(path, sizeof(path), "%s, public", qschema);
	const char *sp[1] = { path };
	if (run(c, "SELECT set_config('search_path', $1, true)", 1, sp, what,
	        err, errlen) != 0)
		goto out_rollback;
	// The file may hold many statements: the simple query protocol.
	PGresult *r = PQexec(c, f->sql);
	if (!ok(r)) {
		const char *m = pgmsg(c, r);
		seterr(err, errlen, "could not apply %s: %.*s", f->name,
		       pglen(m), m);
		PQclear(r);
		goto out_rollback;
	}
	PQclear(r);
	if (PQtransactionStatus(c) != PQTRANS_INTRANS) {
		seterr(err, errlen,
		       "could not apply %s: it must not end the transaction "
		       "itself (no COMMIT/ROLLBACK in migrations)",
		       f->name);
		goto out_rollback;
	}
	char sql[MAX_SCHEMA_NAME * 2 + 120];
	snprintf(sql, sizeof(sql),
	         "INSERT INTO %s.schema_migrations (version, name, checksum) "
	         "VALUES ($1, $2, $3)",
	         qschema);
	char vbuf[16];
	snprintf(vbuf, sizeof(vbuf), "%d", name_version(f->name));
	const char *p[3] = { vbuf, f->name, hex };
	if (run(c, sql, 3, p, what, err, errlen) != 0)
		goto out_rollback;
	if (run(c, "COMMIT", 0, NULL, what, err, errlen) != 0)
		goto out_rollback;
	return 0;

out_rollback:
	if (PQtransactionStatus(c) != PQTRANS_IDLE) {
		PGresult *rb = PQexec(c, "ROLLBACK");
		PQclear(rb);
	}
	return -1;
}

static const char lock_sql[] =
        "SELECT pg_advisory_lock(hashtext('parley.migrate.' || $1))";
static const char unlock_sql[] =
        "SELECT pg_advisory_unlock(hashtext('parley.migrate.' || $1))";

static int check_tx_control(const pl_migration *f, char *err, size_t errlen);

static int
prepare(PGconn *conn, const char *schema, const pl_migration *m, size_t n,
        char **qschema, char *err, size_t errlen)
{
	*qschema = NULL;
	if (conn == NULL || PQstatus(conn) != CONNECTION_OK) {
		seterr(err, errlen, "no database connection");
		return -1;
	}
	if (!valid_schema(schema)) {
		seterr(err, errlen,
		       "bad schema name \"%s\": want [a-z_][a-z0-9_]*, at "
		       "most %d characters",
		       schema != NULL ? schema : "(null)", MAX_SCHEMA_NAME);
		return -1;
	}
	if (check_list(m, n, err, errlen) != 0)
		return -1;
	*qschema = PQescapeIdentifier(conn, schema, strlen(schema));
	if (*qschema == NULL) {
		const char *msg = PQerrorMessage(conn);
		seterr(err, errlen, "could not quote schema name: %.*s",
		       pglen(msg), msg);
		return -1;
	}
	return 0;
}

int
pl_migrate_apply(PGconn *conn, const char *schema, const pl_migration *m,
                 size_t n, char *err, size_t errlen)
{
	char *qs;
	if (prepare(conn, schema, m, n, &qs, err, errlen) != 0)
		return -1;
	if (PQtransactionStatus(conn) != PQTRANS_IDLE) {
		seterr(err, errlen,
		       "could not apply migrations: the connection is inside "
		       "a transaction");
		PQfreemem(qs);
		return -1;
	}
	for (size_t i = 0; i < n; i++) {
		if (check_tx_control(&m[i], err, errlen) != 0) {
			PQfreemem(qs);
			return -1;
		}
	}
	int rc = -1;
	applied *a = NULL;
	size_t na = 0;
	bool *done = calloc(n ? n : 1, sizeof(*done));
	if (done == NULL) {
		seterr(err, errlen, "out of memory");
		goto out_free;
	}
	const char *lp[1] = { schema };
	if (run(conn, lock_sql, 1, lp, "take the migration lock", err,
	        errlen) != 0)
		goto out_free;

	char sql[MAX_SCHEMA_NAME * 2 + 300];
	snprintf(sql, sizeof(sql), "CREATE SCHEMA IF NOT EXISTS %s", qs);
	if (run(conn, sql, 0, NULL, "create schema", err, errlen) != 0)
		goto out_unlock;
	snprintf(sql, sizeof(sql),
	         "CREATE TABLE IF NOT EXISTS %s.schema_migrations ("
	         "version int PRIMARY KEY, name text NOT NULL, "
	         "checksum text NOT NULL, "
	         "applied_at timestamptz NOT NULL DEFAULT now())",
	         qs);
	if (run(conn, sql, 0, NULL, "create schema_migrations", err, errlen) !=
	    0)
		goto out_unlock;
	if (read_applied(conn, qs, &a, &na, err, errlen) != 0)
		goto out_unlock;
	if (compare(m, n, a, na, done, err, errlen) != 0)
		goto out_unlock;
	int count = 0;
	for (size_t i = 0; i < n; i++) {
		if (done[i])
			continue;
		if (apply_one(conn, qs, &m[i], err, errlen) != 0)
			goto out_unlock;
		count++;
	}
	rc = count;

out_unlock:
	if (PQstatus(conn) == CONNECTION_OK) {
		// A failed unlock leaves the lock to the session's end.
		PGresult *r = PQexecParams(conn, unlock_sql, 1, NULL, lp, NULL,
		                           NULL, 0);
		PQclear(r);
	}
out_free:
	free_applied(a, na);
	free(done);
	PQfreemem(qs);
	return rc;
}

int
pl_migrate_status(PGconn *conn, const char *schema, const pl_migration *m,
                  size_t n, char *err, size_t errlen)
{
	char *qs;
	if (prepare(conn, schema, m, n, &qs, err, errlen) != 0)
		return -1;
	int rc = -1;
	applied *a = NULL;
	size_t na = 0;
	bool *done = calloc(n ? n : 1, sizeof(*done));
	if (done == NULL) {
		seterr(err, errlen, "out of memory");
		goto out_free;
	}
	if (read_applied(conn, qs, &a, &na, err, errlen) != 0)
		goto out_free;
	if (compare(m, n, a, na, done, err, errlen) != 0)
		goto out_free;
	rc = 0;
	for (size_t i = 0; i < n; i++) {
		if (!done[i]) {
			seterr(err, errlen, "migration %s is pending",
			       m[i].name);
			rc = 1;
			break;
		}
	}
out_free:
	free_applied(a, na);
	free(done);
	PQfreemem(qs);
	return rc;
}

// The additive-policy lint.
//
// Each file is tokenized (comments dropped; strings, dollar-quoted bodies
// and quoted identifiers kept whole) and split into statements on ';'. A
// few statement shapes are recognised: CREATE TABLE (its columns and
// their one-word types), CREATE DOMAIN, ALTER TABLE actions, DROP TABLE
// and DROP SCHEMA. What a file creates it may change freely; what an
// earlier file created is released and may only grow. One change of type
// is not a change for readers and writers and is allowed: a column moved
// to a domain over the very type it had (text to a domain over text), with
// no USING.

enum tok_kind { T_WORD, T_QIDENT, T_STRING, T_NUM, T_PUNCT, T_SEMI };

typedef struct tok {
	enum tok_kind kind;
	char *text; // words lowercased; quoted identifiers unquoted
	int line;
	char ch; // T_PUNCT
} tok;

typedef struct toks {
	tok *v;
	size_t n, cap;
} toks;

static void
toks_free(toks *t)
{
	for (size_t i = 0; i < t->n; i++)
		free(t->v[i].text);
	free(t->v);
	t->v = NULL;
	t->n = t->cap = 0;
}

static int
push(toks *t, enum tok_kind k, const char *s, size_t len, int line, char ch)
{
	if (t->n == t->cap) {
		size_t ncap = t->cap ? t->cap * 2 : 256;
		tok *nv = realloc(t->v, ncap * sizeof(*nv));
		if (nv == NULL)
			return -1;
		t->v = nv;
		t->cap = ncap;
	}
	char *text = NULL;
	if (s != NULL) {
		text = malloc(len + 1);
		if (text == NULL)
			return -1;
		memcpy(text, s, len);
		text[len] = '\0';
	}
	t->v[t->n++] = (tok){ .kind = k, .text = text, .line = line, .ch = ch };
	return 0;
}

static bool
word_start(unsigned char c)
{
	return isalpha(c) || c == '_' || c >= 0x80;
}

static bool
word_char(unsigned char c)
{
	return isalnum(c) || c == '_' || c == '$' || c >= 0x80;
}

static int
count_lines(const char *s, size_t from, size_t to)
{
	int n = 0;
	for (size_t i = from; i < to; i++)
		if (s[i] == '\n')
			n++;
	return n;
}

// Returns 0, or -1 with err set for an unterminated construct or OOM.
static int
tokenize(const char *file, const char *s, size_t len, toks *t, char *err,
         size_t errlen)
{
	size_t i = 0;
	int line = 1;
	while (i < len) {
		unsigned char c = (unsigned char)s[i];
		size_t start = i;
		int sline = line;
		if (c == '\n') {
			line++;
			i++;
		} else if (isspace(c)) {
			i++;
		} else if (c == '-' && i + 1 < len && s[i + 1] == '-') {
			while (i < len && s[i] != '\n')
				i++;
		} else if (c == '/' && i + 1 < len && s[i + 1] == '*') {
			int depth = 0; // PostgreSQL's block comments nest
			do {
				if (s[i] == '/' && i + 1 < len &&
				    s[i + 1] == '*') {
					depth++;
					i += 2;
				} else if (s[i] == '*' && i + 1 < len &&
				           s[i + 1] == '/') {
					depth--;
					i += 2;
				} else {
					if (s[i] == '\n')
						line++;
					i++;
				}
			} while (depth > 0 && i < len);
			if (depth > 0) {
				seterr(err, errlen,
				       "%s:%d: unterminated comment", file,
				       sline);
				return -1;
			}
		} else if (c == '\'' ||
		           ((c == 'e' || c == 'E') && i + 1 < len &&
		            s[i + 1] == '\'' &&
		            (i == 0 || !word_char((unsigned char)s[i - 1])))) {
			bool esc = c != '\'';
			i += esc ? 2 : 1;
			for (;;) {
				if (i >= len) {
					seterr(err, errlen,
					       "%s:%d: unterminated string",
					       file, sline);
					return -1;
				}
				if (esc && s[i] == '\\' && i + 1 < len) {
					i += 2;
					continue;
				}
				if (s[i] == '\'') {
					if (i + 1 < len && s[i + 1] == '\'') {
						i += 2;
						continue;
					}
					i++;
					break;
				}
				i++;
			}
			line += count_lines(s, start, i);
			if (push(t, T_STRING, NULL, 0, sline, 0) != 0)
				goto out_oom;
		} else if (c == '"') {
			char *buf = malloc(len - i + 1);
			size_t bn = 0;
			if (buf == NULL)
				goto out_oom;
			i++;
			for (;;) {
				if (i >= len) {
					free(buf);
					seterr(err, errlen,
					       "%s:%d: unterminated quoted "
					       "identifier",
					       file, sline);
					return -1;
				}
				if (s[i] == '"') {
					if (i + 1 < len && s[i + 1] == '"') {
						buf[bn++] = '"';
						i += 2;
						continue;
					}
					i++;
					break;
				}
				buf[bn++] = s[i++];
			}
			line += count_lines(s, start, i);
			int r = push(t, T_QIDENT, buf, bn, sline, 0);
			free(buf);
			if (r != 0)
				goto out_oom;
		} else if (c == '$' && i + 1 < len &&
		           (s[i + 1] == '$' ||
		            word_start((unsigned char)s[i + 1]))) {
			// $tag$ ... $tag$; "$1" parameters fall through below.
			size_t j = i + 1;
			while (j < len && s[j] != '$' &&
			       (isalnum((unsigned char)s[j]) || s[j] == '_' ||
			        (unsigned char)s[j] >= 0x80))
				j++;
			if (j >= len || s[j] != '$') {
				// Not a dollar quote: a stray '$'.
				if (push(t, T_PUNCT, NULL, 0, sline, '$') != 0)
					goto out_oom;
				i++;
				continue;
			}
			size_t taglen = j + 1 - i;
			const char *tag = s + i;
			i = j + 1;
			for (;;) {
				if (i + taglen > len) {
					seterr(err, errlen,
					       "%s:%d: unterminated "
					       "dollar-quoted string",
					       file, sline);
					return -1;
				}
				if (s[i] == '$' &&
				    memcmp(s + i, tag, taglen) == 0) {
					i += taglen;
					break;
				}
				i++;
			}
			line += count_lines(s, start, i);
			if (push(t, T_STRING, NULL, 0, sline, 0) != 0)
				goto out_oom;
		} else if (word_start(c)) {
			while (i < len && word_char((unsigned char)s[i]))
				i++;
			if (push(t, T_WORD, s + start, i - start, sline, 0) !=
			    0)
				goto out_oom;
			char *w = t->v[t->n - 1].text;
			for (; *w != '\0'; w++)
				*w = (char)tolower((unsigned char)*w);
		} else if (isdigit(c)) {
			while (i < len && (isalnum((unsigned char)s[i]) ||
			                   s[i] == '.' || s[i] == '_'))
				i++;
			if (push(t, T_NUM, NULL, 0, sline, 0) != 0)
				goto out_oom;
		} else if (c == ';') {
			i++;
			if (push(t, T_SEMI, NULL, 0, sline, ';') != 0)
				goto out_oom;
		} else {
			i++;
			if (push(t, T_PUNCT, NULL, 0, sline, (char)c) != 0)
				goto out_oom;
		}
	}
	if (push(t, T_SEMI, NULL, 0, line, ';') != 0)
		goto out_oom;
	return 0;
out_oom:
	seterr(err, errlen, "%s: out of memory", file);
	return -1;
}

typedef struct lcol {
	char *name;
	char *type; // a one-word type as written ("text"), else NULL
	size_t file;
} lcol;

typedef struct ltable {
	char *schema; // NULL when the file did not qualify the name
	char *name;
	size_t file;
	bool cols_known; // false for CREATE TABLE ... AS / PARTITION OF
	lcol *cols;
	size_t ncols, capcols;
} ltable;

// CREATE DOMAIN name AS base: a column may move from its type to a domain
// over that same type (the values, their wire format and the text they
// read as do not change; the domain's checks replace the table's).
typedef struct ldomain {
	char *schema; // NULL when the file did not qualify the name
	char *name;
	char *base; // one word, or NULL when the base type is more
} ldomain;

typedef struct lint {
	const pl_migration *m;
	size_t cur; // the file being read
	ltable *tables;
	size_t ntables, captables;
	ldomain *domains;
	size_t ndomains, capdomains;
	char *err;
	size_t errlen;
	bool failed; // a violation or OOM was reported
} lint;

typedef struct qname {
	const char *schema;
	const char *name;
} qname;

static void
lint_free(lint *l)
{
	for (size_t i = 0; i < l->ntables; i++) {
		ltable *t = &l->tables[i];
		free(t->schema);
		free(t->name);
		for (size_t j = 0; j < t->ncols; j++) {
			free(t->cols[j].name);
			free(t->cols[j].type);
		}
		free(t->cols);
	}
	free(l->tables);
	for (size_t i = 0; i < l->ndomains; i++) {
		free(l->domains[i].schema);
		free(l->domains[i].name);
		free(l->domains[i].base);
	}
	free(l->domains);
}

static void
lint_oom(lint *l)
{
	seterr(l->err, l->errlen, "out of memory");
	l->failed = true;
}

static void violation(lint *l, int line, const char *fmt, ...)
        __attribute__((format(printf, 3, 4)));

static void
violation(lint *l, int line, const char *fmt, ...)
{
	if (l->failed)
		return;
	l->failed = true;
	if (l->err == NULL || l->errlen == 0)
		return;
	int n = snprintf(l->err, l->errlen, "%s:%d: ", l->m[l->cur].name, line);
	if (n < 0 || (size_t)n >= l->errlen)
		return;
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(l->err + n, l->errlen - (size_t)n, fmt, ap);
	va_end(ap);
}

static bool
schema_matches(const char *a, const char *b)
{
	return a == NULL || b == NULL || strcmp(a, b) == 0;
}

static ltable *
find_table(lint *l, qname q)
{
	for (size_t i = l->ntables; i-- > 0;) {
		ltable *t = &l->tables[i];
		if (strcmp(t->name, q.name) == 0 &&
		    schema_matches(t->schema, q.schema))
			return t;
	}
	return NULL;
}

static void
remove_table(lint *l, ltable *t)
{
	free(t->schema);
	free(t->name);
	for (size_t j = 0; j < t->ncols; j++) {
		free(t->cols[j].name);
		free(t->cols[j].type);
	}
	free(t->cols);
	size_t i = (size_t)(t - l->tables);
	memmove(t, t + 1, (l->ntables - i - 1) * sizeof(*t));
	l->ntables--;
}

static ltable *
add_table(lint *l, qname q, bool cols_known)
{
	if (l->ntables == l->captables) {
		size_t ncap = l->captables ? l->captables * 2 : 16;
		ltable *nt = realloc(l->tables, ncap * sizeof(*nt));
		if (nt == NULL) {
			lint_oom(l);
			return NULL;
		}
		l->tables = nt;
		l->captables = ncap;
	}
	ltable *t = &l->tables[l->ntables];
	memset(t, 0, sizeof(*t));
	t->name = strdup(q.name);
	t->schema = q.schema != NULL ? strdup(q.schema) : NULL;
	if (t->name == NULL || (q.schema != NULL && t->schema == NULL)) {
		free(t->name);
		free(t->schema);
		lint_oom(l);
		return NULL;
	}
	t->file = l->cur;
	t->cols_known = cols_known;
	l->ntables++;
	return t;
}

static lcol *
find_col(ltable *t, const char *name)
{
	for (size_t i = 0; i < t->ncols; i++)
		if (strcmp(t->cols[i].name, name) == 0)
			return &t->cols[i];
	return NULL;
}

static void
add_col(lint *l, ltable *t, const char *name, const char *type)
{
	if (find_col(t, name) != NULL)
		return;
	if (t->ncols == t->capcols) {
		size_t ncap = t->capcols ? t->capcols * 2 : 8;
		lcol *nc = realloc(t->cols, ncap * sizeof(*nc));
		if (nc == NULL) {
			lint_oom(l);
			return;
		}
		t->cols = nc;
		t->capcols = ncap;
	}
	char *n = strdup(name), *ty = type != NULL ? strdup(type) : NULL;
	if (n == NULL || (type != NULL && ty == NULL)) {
		free(n);
		free(ty);
		lint_oom(l);
		return;
	}
	t->cols[t->ncols++] = (lcol){ .name = n, .type = ty, .file = l->cur };
}

// A statement: tokens [b, e) of the file's list, e at its ';'.
typedef struct stmt {
	const tok *v;
	size_t b, e;
} stmt;

static bool
is_word(const stmt *s, size_t i, const char *w)
{
	return i < s->e && s->v[i].kind == T_WORD &&
	       strcmp(s->v[i].text, w) == 0;
}

static bool
is_punct(const stmt *s, size_t i, char ch)
{
	return i < s->e && s->v[i].kind == T_PUNCT && s->v[i].ch == ch;
}

static bool
is_ident(const stmt *s, size_t i)
{
	return i < s->e && (s->v[i].kind == T_WORD || s->v[i].kind == T_QIDENT);
}

static int
line_at(const stmt *s, size_t i)
{
	return s->v[i < s->e ? i : s->e].line;
}

// Skips "if exists" / "if not exists".
static size_t
skip_if(const stmt *s, size_t i)
{
	if (is_word(s, i, "if") && is_word(s, i + 1, "exists"))
		return i + 2;
	if (is_word(s, i, "if") && is_word(s, i + 1, "not") &&
	    is_word(s, i + 2, "exists"))
		return i + 3;
	return i;
}

// Reads [db.][schema.]name at *i; false when there is none.
static bool
read_qname(const stmt *s, size_t *i, qname *q)
{
	if (!is_ident(s, *i))
		return false;
	const char *parts[3];
	int np = 0;
	size_t j = *i;
	parts[np++] = s->v[j++].text;
	while (np < 3 && is_punct(s, j, '.') && is_ident(s, j + 1)) {
		parts[np++] = s->v[j + 1].text;
		j += 2;
	}
	q->name = parts[np - 1];
	q->schema = np > 1 ? parts[np - 2] : NULL;
	*i = j;
	return true;
}

// The type at i when it is one bare word ("text", "uuid", "bigint"); NULL
// for anything longer ("double precision", "varchar(20)", "text[]",
// "timestamp with time zone", a qualified name), which the lint does not
// compare.
static const char *
simple_type(const stmt *s, size_t i, size_t e)
{
	static const char *const more[] = { "varying", "precision", "with",
		                            "without", NULL };
	if (i >= e || s->v[i].kind != T_WORD)
		return NULL;
	if (is_punct(s, i + 1, '(') || is_punct(s, i + 1, '[') ||
	    is_punct(s, i + 1, '.'))
		return NULL;
	for (int k = 0; more[k] != NULL; k++)
		if (is_word(s, i + 1, more[k]))
			return NULL;
	return s->v[i].text;
}

// Position of the ')' closing the '(' at i, or s->e.
static size_t
close_paren(const stmt *s, size_t i)
{
	int depth = 0;
	for (; i < s->e; i++) {
		if (is_punct(s, i, '('))
			depth++;
		else if (is_punct(s, i, ')') && --depth == 0)
			return i;
	}
	return s->e;
}

// End of the comma-separated item starting at i (at depth 0), before end.
static size_t
item_end(const stmt *s, size_t i, size_t end)
{
	int depth = 0;
	for (; i < end; i++) {
		if (is_punct(s, i, '('))
			depth++;
		else if (is_punct(s, i, ')'))
			depth--;
		else if (depth == 0 && is_punct(s, i, ','))
			return i;
	}
	return end;
}

static bool
constraint_word(const stmt *s, size_t i)
{
	static const char *const w[] = { "constraint", "primary", "unique",
		                         "check",      "foreign", "exclude",
		                         "like",       NULL };
	for (int k = 0; w[k] != NULL; k++)
		if (is_word(s, i, w[k]))
			return true;
	return false;
}

static const char *
disp(const qname *q)
{
	return q->name;
}

static void
lint_create_table(lint *l, const stmt *s, size_t i)
{
	i = skip_if(s, i);
	qname q;
	if (!read_qname(s, &i, &q))
		return;
	if (find_table(l, q) != NULL)
		return; // IF NOT EXISTS on a known table: nothing new
	bool cols = is_punct(s, i, '(');
	ltable *t = add_table(l, q, cols);
	if (t == NULL || !cols)
		return;
	size_t end = close_paren(s, i);
	for (size_t j = i + 1; j < end;) {
		size_t ie = item_end(s, j, end);
		if (is_word(s, j, "like"))
			t->cols_known = false; // copies columns we cannot see
		else if (j < ie && is_ident(s, j) && !constraint_word(s, j))
			add_col(l, t, s->v[j].text, simple_type(s, j + 1, ie));
		j = ie + 1;
	}
}

static void
lint_drop_table(lint *l, const stmt *s, size_t i)
{
	i = skip_if(s, i);
	for (;;) {
		size_t at = i;
		qname q;
		if (!read_qname(s, &i, &q))
			return;
		ltable *t = find_table(l, q);
		if (t != NULL) {
			if (t->file < l->cur) {
				violation(l, line_at(s, at),
				          "drops table %s created in %s",
				          disp(&q), l->m[t->file].name);
				return;
			}
			remove_table(l, t);
		}
		if (!is_punct(s, i, ','))
			return;
		i++;
	}
}

static void
lint_drop_schema(lint *l, const stmt *s, size_t i)
{
	i = skip_if(s, i);
	while (is_ident(s, i)) {
		const char *sch = s->v[i].text;
		for (size_t k = 0; k < l->ntables; k++) {
			ltable *t = &l->tables[k];
			if (t->schema != NULL && strcmp(t->schema, sch) == 0 &&
			    t->file < l->cur) {
				violation(l, line_at(s, i),
				          "drops schema %s holding table %s "
				          "created in %s",
				          sch, t->name, l->m[t->file].name);
				return;
			}
		}
		if (!is_punct(s, i + 1, ','))
			return;
		i += 2;
	}
}

// The file that created column c of t, or (size_t)-1 when it is new here
// or unknown. A table whose columns are not known answers with its own
// file.
static size_t
col_origin(ltable *t, const char *c)
{
	lcol *col = find_col(t, c);
	if (col != NULL)
		return col->file;
	return t->cols_known ? (size_t)-1 : t->file;
}

// ADD [COLUMN] [IF NOT EXISTS] name type [constraints] in [i, e).
static void
lint_add(lint *l, const stmt *s, size_t i, size_t e, ltable *t, const qname *q)
{
	bool column = is_word(s, i, "column");
	if (column)
		i++;
	else if (constraint_word(s, i))
		return; // ADD CONSTRAINT, ADD PRIMARY KEY, ...
	i = skip_if(s, i);
	if (!is_ident(s, i) || i >= e)
		return;
	const char *name = s->v[i].text;
	int line = line_at(s, i);
	bool notnull = false, has_default = false;
	int depth = 0;
	for (size_t j = i + 1; j < e; j++) {
		if (is_punct(s, j, '(')) {
			depth++;
			continue;
		}
		if (is_punct(s, j, ')')) {
			depth--;
			continue;
		}
		if (depth != 0)
			continue;
		if (is_word(s, j, "not") && is_word(s, j + 1, "null") &&
		    !is_word(s, j - 1, "is"))
			notnull = true;
		else if (is_word(s, j, "primary") && is_word(s, j + 1, "key"))
			notnull = true;
		else if (is_word(s, j, "default") ||
		         is_word(s, j, "generated") ||
		         is_word(s, j, "serial") ||
		         is_word(s, j, "bigserial") ||
		         is_word(s, j, "smallserial") ||
		         is_word(s, j, "serial2") || is_word(s, j, "serial4") ||
		         is_word(s, j, "serial8"))
			has_default = true;
	}
	// IF NOT EXISTS on a column that is already there adds nothing.
	if (t->file < l->cur && notnull && !has_default &&
	    find_col(t, name) == NULL) {
		violation(
		        l, line,
		        "adds NOT NULL column %s.%s without a default to table "
		        "%s created in %s",
		        disp(q), name, disp(q), l->m[t->file].name);
		return;
	}
	add_col(l, t, name, simple_type(s, i + 1, e));
}

// CREATE DOMAIN name [AS] type ..., i just past DOMAIN.
static void
lint_create_domain(lint *l, const stmt *s, size_t i)
{
	qname q;
	if (!read_qname(s, &i, &q))
		return;
	if (is_word(s, i, "as"))
		i++;
	const char *base = simple_type(s, i, s->e);
	if (l->ndomains == l->capdomains) {
		size_t ncap = l->capdomains ? l->capdomains * 2 : 8;
		ldomain *nd = realloc(l->domains, ncap * sizeof(*nd));
		if (nd == NULL) {
			lint_oom(l);
			return;
		}
		l->domains = nd;
		l->capdomains = ncap;
	}
	ldomain d = {
		.schema = q.schema != NULL ? strdup(q.schema) : NULL,
		.name = strdup(q.name),
		.base = base != NULL ? strdup(base) : NULL,
	};
	if (d.name == NULL || (q.schema != NULL && d.schema == NULL) ||
	    (base != NULL && d.base == NULL)) {
		free(d.schema);
		free(d.name);
		free(d.base);
		lint_oom(l);
		return;
	}
	l->domains[l->ndomains++] = d;
}

// Whether ALTER COLUMN c TYPE, with the type at i and the action ending
// at e, only moves c to a domain over the type c was created with: a
// known domain named alone (no USING, COLLATE or array brackets after
// it), over the same one-word base type.
static bool
retype_to_own_domain(const lint *l, const stmt *s, size_t i, size_t e,
                     const lcol *c)
{
	qname q;
	if (c == NULL || c->type == NULL || !read_qname(s, &i, &q) || i != e)
		return false;
	for (size_t k = l->ndomains; k-- > 0;) {
		const ldomain *d = &l->domains[k];
		if (strcmp(d->name, q.name) == 0 &&
		    schema_matches(d->schema, q.schema))
			return d->base != NULL && strcmp(d->base, c->type) == 0;
	}
	return false;
}

static void
lint_alter_action(lint *l, const stmt *s, size_t i, size_t e, ltable *t,
                  const qname *q)
{
	if (is_word(s, i, "add")) {
		lint_add(l, s, i + 1, e, t, q);
		return;
	}
	if (is_word(s, i, "drop")) {
		size_t j = i + 1;
		if (is_word(s, j, "constraint"))
			return;
		if (is_word(s, j, "column"))
			j++;
		j = skip_if(s, j);
		if (!is_ident(s, j))
			return;
		const char *c = s->v[j].text;
		size_t from = col_origin(t, c);
		if (from != (size_t)-1 && from < l->cur) {
			violation(l, line_at(s, i),
			          "drops column %s.%s created in %s", disp(q),
			          c, l->m[from].name);
			return;
		}
		lcol *col = find_col(t, c);
		if (col != NULL) {
			free(col->name);
			free(col->type);
			*col = t->cols[--t->ncols];
		}
		return;
	}
	if (is_word(s, i, "alter")) {
		size_t j = i + 1;
		if (is_word(s, j, "constraint"))
			return;
		if (is_word(s, j, "column"))
			j++;
		if (!is_ident(s, j))
			return;
		const char *c = s->v[j].text;
		size_t k = j + 1;
		const char *what = NULL;
		if (is_word(s, k, "type") ||
		    (is_word(s, k, "set") && is_word(s, k + 1, "data") &&
		     is_word(s, k + 2, "type"))) {
			size_t ty = is_word(s, k, "type") ? k + 1 : k + 3;
			if (retype_to_own_domain(l, s, ty, e, find_col(t, c)))
				return;
			what = "changes the type of";
		} else if (is_word(s, k, "set") && is_word(s, k + 1, "not") &&
		           is_word(s, k + 2, "null"))
			what = "sets NOT NULL on";
		if (what == NULL)
			return;
		size_t from = col_origin(t, c);
		if (from != (size_t)-1 && from < l->cur)
			violation(l, line_at(s, i),
			          "%s column %s.%s created in %s", what,
			          disp(q), c, l->m[from].name);
		return;
	}
	if (is_word(s, i, "set") && is_word(s, i + 1, "schema")) {
		if (t->file < l->cur)
			violation(l, line_at(s, i),
			          "moves table %s created in %s to another "
			          "schema",
			          disp(q), l->m[t->file].name);
		return;
	}
}

static void
lint_rename(lint *l, const stmt *s, size_t i, ltable *t, const qname *q)
{
	// i is just past RENAME.
	if (is_word(s, i, "constraint"))
		return;
	if (is_word(s, i, "to")) {
		if (t->file < l->cur) {
			violation(l, line_at(s, i - 1),
			          "renames table %s created in %s", disp(q),
			          l->m[t->file].name);
			return;
		}
		if (is_ident(s, i + 1)) {
			char *n = strdup(s->v[i + 1].text);
			if (n == NULL) {
				lint_oom(l);
				return;
			}
			free(t->name);
			t->name = n;
		}
		return;
	}
	if (is_word(s, i, "column"))
		i++;
	if (!is_ident(s, i))
		return;
	const char *c = s->v[i].text;
	size_t from = col_origin(t, c);
	if (from != (size_t)-1 && from < l->cur) {
		violation(l, line_at(s, i - 1),
		          "renames column %s.%s created in %s", disp(q), c,
		          l->m[from].name);
		return;
	}
	lcol *col = find_col(t, c);
	if (col != NULL && is_word(s, i + 1, "to") && is_ident(s, i + 2)) {
		char *n = strdup(s->v[i + 2].text);
		if (n == NULL) {
			lint_oom(l);
			return;
		}
		free(col->name);
		col->name = n;
	}
}

static void
lint_alter_table(lint *l, const stmt *s, size_t i)
{
	i = skip_if(s, i);
	if (is_word(s, i, "only"))
		i++;
	qname q;
	if (!read_qname(s, &i, &q))
		return;
	if (is_punct(s, i, '*'))
		i++;
	ltable *t = find_table(l, q);
	if (t == NULL)
		return; // not one of this service's tables
	if (is_word(s, i, "rename")) {
		lint_rename(l, s, i + 1, t, &q);
		return;
	}
	while (i < s->e && !l->failed) {
		size_t e = item_end(s, i, s->e);
		lint_alter_action(l, s, i, e, t, &q);
		i = e + 1;
	}
}

static void
lint_stmt(lint *l, const stmt *s)
{
	size_t i = s->b;
	if (i >= s->e)
		return;
	if (is_word(s, i, "create")) {
		i++;
		if (is_word(s, i, "or") && is_word(s, i + 1, "replace"))
			i += 2;
		if (is_word(s, i, "temp") || is_word(s, i, "temporary"))
			return; // session tables are not part of the schema
		while (is_word(s, i, "global") || is_word(s, i, "local") ||
		       is_word(s, i, "unlogged"))
			i++;
		if (is_word(s, i, "table"))
			lint_create_table(l, s, i + 1);
		else if (is_word(s, i, "domain"))
			lint_create_domain(l, s, i + 1);
	} else if (is_word(s, i, "alter") && is_word(s, i + 1, "table")) {
		lint_alter_table(l, s, i + 2);
	} else if (is_word(s, i, "drop") && is_word(s, i + 1, "table")) {
		lint_drop_table(l, s, i + 2);
	} else if (is_word(s, i, "drop") && is_word(s, i + 1, "schema")) {
		lint_drop_schema(l, s, i + 2);
	}
}

int
pl_migrate_lint(const pl_migration *m, size_t n, char *err, size_t errlen)
{
	if (n > 0 && m == NULL) {
		seterr(err, errlen, "no migrations given");
		return -1;
	}
	lint l = { .m = m, .err = err, .errlen = errlen };
	int rc = 0;
	for (size_t f = 0; f < n && rc == 0; f++) {
		if (m[f].name == NULL || m[f].sql == NULL) {
			seterr(err, errlen, "migration %zu has no name or sql",
			       f + 1);
			rc = -1;
			break;
		}
		toks t = { 0 };
		if (tokenize(m[f].name, m[f].sql, m[f].len, &t, err, errlen) !=
		    0) {
			toks_free(&t);
			rc = -1;
			break;
		}
		l.cur = f;
		size_t b = 0;
		for (size_t k = 0; k < t.n && !l.failed; k++) {
			if (t.v[k].kind != T_SEMI)
				continue;
			stmt s = { .v = t.v, .b = b, .e = k };
			lint_stmt(&l, &s);
			b = k + 1;
		}
		toks_free(&t);
		if (l.failed)
			rc = -1;
	}
	lint_free(&l);
	return rc;
}

// Each file runs in a transaction of its own with its schema_migrations
// row: a COMMIT inside it would make its changes stick without the row.
static int
check_tx_control(const pl_migration *f, char *err, size_t errlen)
{
	toks t = { 0 };
	if (tokenize(f->name, f->sql, f->len, &t, err, errlen) != 0) {
		toks_free(&t);
		return -1;
	}
	static const char *const ctl[] = { "begin",    "start", "commit", "end",
		                           "rollback", "abort", NULL };
	int rc = 0, atomic = 0;
	bool at_start = true;
	for (size_t i = 0; i < t.n && rc == 0; i++) {
		tok *k = &t.v[i];
		if (k->kind == T_SEMI) {
			at_start = true;
			continue;
		}
		// SQL-standard function bodies: BEGIN ATOMIC ...; ... END.
		if (!at_start && k->kind == T_WORD &&
		    strcmp(k->text, "begin") == 0 && i + 1 < t.n &&
		    t.v[i + 1].kind == T_WORD &&
		    strcmp(t.v[i + 1].text, "atomic") == 0)
			atomic++;
		if (at_start && atomic > 0) {
			if (k->kind == T_WORD && strcmp(k->text, "end") == 0)
				atomic--;
		} else if (at_start && k->kind == T_WORD) {
			bool to_savepoint = strcmp(k->text, "rollback") == 0 &&
			                    i + 1 < t.n &&
			                    t.v[i + 1].kind == T_WORD &&
			                    strcmp(t.v[i + 1].text, "to") == 0;
			for (int w = 0; ctl[w] != NULL && !to_savepoint; w++) {
				if (strcmp(k->text, ctl[w]) == 0) {
					seterr(err, errlen,
					       "%s:%d: %s: migrations run in a "
					       "transaction of their own; "
					       "remove "
					       "transaction control",
					       f->name, k->line, k->text);
					rc = -1;
					break;
				}
			}
		}
		at_start = false;
	}
	toks_free(&t);
	return rc;
}

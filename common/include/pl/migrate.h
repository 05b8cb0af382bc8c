// Migrations per service (DESIGN §4): files NNN_name.sql applied in order
// under an advisory lock, each recorded with its SHA-256; an applied file
// whose content changed is refused.
#ifndef PL_MIGRATE_H
#define PL_MIGRATE_H

#include <stddef.h>

#include <libpq-fe.h>

typedef struct pl_migration {
	char *name; // "001_init.sql"
	char *sql;
	size_t len;
} pl_migration;

// Loads every NNN_*.sql in dir, sorted by number; a gap or a duplicate
// number, or any other .sql name, is an error. Returns 0 and a malloc'd
// array, or -1 with err set.
int pl_migrate_load_dir(const char *dir, pl_migration **out, size_t *n,
                        char *err, size_t errlen);
void pl_migrate_free(pl_migration *m, size_t n);

// Applies what is not yet applied to schema (created if missing) and
// records it in <schema>.schema_migrations. Two processes running this at
// once apply each file once. Returns the number applied, or -1 with err set
// (a changed applied file names the file).
int pl_migrate_apply(PGconn *conn, const char *schema, const pl_migration *m,
                     size_t n, char *err, size_t errlen);

// 0 when every file is applied with a matching checksum, 1 when some are
// pending, -1 on a mismatch or error (err set).
int pl_migrate_status(PGconn *conn, const char *schema, const pl_migration *m,
                      size_t n, char *err, size_t errlen);

// The additive policy (DESIGN §4) over a service's files: a file may not
// drop, rename or change the type of a table or column created by an
// earlier file, nor add a NOT NULL column without a default to one. Writes
// the first violation ("002_x.sql:3: drops column contacts.phone") into err;
// returns 0 when the files comply.
int pl_migrate_lint(const pl_migration *m, size_t n, char *err, size_t errlen);

#endif

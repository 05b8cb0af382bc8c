// parley-import: brings a single-tenant legacy WhatsApp bot database into
// one Parley tenant (issue 10). reader.c reads the source in one read-only
// REPEATABLE READ transaction, mapper.c turns rows into Parley's shapes (no
// I/O), writer.c talks to the services by RPC, report.c prints and checks,
// run.c puts them in order, cli.c reads flags and environment.
#ifndef IMPORT_H
#define IMPORT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "parley/agents/v1/agents.pb-c.h"
#include "parley/messaging/v1/messaging.pb-c.h"
#include "pl/arena.h"
#include "pl/migrate.h"
#include "pl/rpc.h"

extern const pl_migration import_migrations[];
extern const size_t import_n_migrations;

#define IMP_PHONE_MAX      20
#define IMP_SYSTEM_CONTACT "system" // legacy id of the contact for orphans

// ---------------------------------------------------------------------------
// Source rows (strings in the source's arena; NULL is SQL NULL).

typedef struct imp_contact {
	const char *id, *phone, *name, *thread_id, *created_at, *updated_at;
	// mapped
	char e164[IMP_PHONE_MAX]; // "" when the phone is not a number
	int canon;                // index of the contact it merges into
	int group;                // its conversation (-1: none)
	char pid[40];             // Parley contact id
} imp_contact;

typedef struct imp_message {
	const char *id, *message_id, *contact_id, *direction, *type, *text,
	        *url, *status, *sent_at, *metadata, *created_at;
	// mapped (proto enum values)
	int dir, sender, mtype, mstatus;
	int group;
	char pid[40];
} imp_message;

typedef struct imp_item {
	char *sku, *name;
	int64_t qty, unit_minor;
} imp_item;

typedef struct imp_order {
	const char *id, *contact_id, *message_id, *details, *status,
	        *created_at, *updated_at;
	// mapped
	int ostatus;
	char currency[4];
	imp_item *items;
	size_t n_items;
	char *address; // JSON
	int64_t total_minor;
	int contact; // index into contacts, -1 unknown
	int message; // index into messages, -1 none
	char pid[40];
} imp_order;

typedef struct imp_param {
	char field[64]; // "name", "phone", "custom_fields.x"
} imp_param;

typedef struct imp_campaign {
	const char *id, *name, *type, *tmpl, *is_active, *created_at;
	// mapped
	char *body; // {{1}}-style
	imp_param params[16];
	int n_params;
	int cstatus;
	char tname[64];
	char pid[40];
} imp_campaign;

typedef struct imp_sub {
	const char *id, *campaign_id, *contact_id, *status, *subscribed_at;
	int campaign, contact; // indexes
	int rstatus;
	char pid[40];
} imp_sub;

typedef struct imp_ckpt {
	const char *thread_id, *ns, *id, *parent, *type, *state, *metadata;
	int group;                 // the conversation (-1: no contact)
	const char *mapped_thread; // conversation id, or the legacy thread
} imp_ckpt;

typedef struct imp_blob {
	const char *thread_id, *ns, *channel, *version, *type;
	uint8_t *data;
	size_t len;
	bool is_null;
	int group;
	const char *mapped_thread;
} imp_blob;

typedef struct imp_write {
	const char *thread_id, *ns, *ckpt_id, *task_id, *idx, *channel, *type,
	        *task_path;
	uint8_t *data;
	size_t len;
	int group;
	const char *mapped_thread;
} imp_write;

// A conversation to be: one per (merged) contact with messages or a thread.
typedef struct imp_group {
	int contact; // canonical contact index, -1 for the system contact
	char legacy[64];
	size_t *msgs; // indexes into messages, in legacy id order
	size_t n_msgs, cap;
	char last_at[40];
	int status; // ConversationStatus
	char pid[40];
} imp_group;

typedef struct imp_merge {
	int from, into; // contact indexes
} imp_merge;

typedef struct imp_source {
	pl_arena arena;
	imp_contact *contacts;
	size_t n_contacts;
	imp_message *messages;
	size_t n_messages;
	imp_order *orders;
	size_t n_orders;
	imp_campaign *campaigns;
	size_t n_campaigns;
	imp_sub *subs;
	size_t n_subs;
	imp_ckpt *ckpts;
	size_t n_ckpts;
	imp_blob *blobs;
	size_t n_blobs;
	imp_write *writes;
	size_t n_writes;
	// mapped
	imp_group *groups;
	size_t n_groups;
	int system_group; // -1 none
	imp_merge *merges;
	size_t n_merges;
	size_t orphans; // messages with no contact
	char **orphan_threads;
	size_t n_orphan_threads;
	char **problems; // non-fatal findings for the report
	size_t n_problems, cap_problems;
} imp_source;

// ---------------------------------------------------------------------------
// reader.c

// Reads the whole source inside BEGIN ISOLATION LEVEL REPEATABLE READ READ
// ONLY (one snapshot), after checking every table and column it needs.
// Returns 0, or -1 with err naming what is wrong ("source table
// \"orders\" has no column \"order_details\"").
int import_read(const char *url, imp_source *src, char *err, size_t errlen);

void import_source_free(imp_source *src);

// ---------------------------------------------------------------------------
// mapper.c (pure)

// E.164 from a legacy phone ("whatsapp:+55...", "1555...", "+44 7700 ...");
// false when it is not 8..15 digits.
bool import_phone_e164(const char *raw, char out[IMP_PHONE_MAX]);

// Legacy values to proto enum values.
int import_map_direction(const char *s); // MessageDirection
int import_map_msg_type(const char *s);  // MessageType
int import_map_msg_status(const char *s, int direction);
int import_map_order_status(const char *s);

// "12.5" (a JSON number's text) to minor units with `exp` decimals, exact
// (no floating point); false when not a non-negative decimal or too big.
bool import_decimal_minor(const char *s, int exp, int64_t *out);

// order_details JSON -> items, currency, address. Returns 0 or -1 with err.
int import_map_order(pl_arena *a, const char *details, imp_order *o, char *err,
                     size_t errlen);

// message_template with {{word}} -> body with {{1}}.. and the bindings.
int import_map_template(pl_arena *a, const char *tmpl, imp_campaign *c,
                        char *err, size_t errlen);

// Conversation status for a last activity `last_at` (RFC 3339) given the
// idle limit (0: never closed) and now (Unix seconds).
int import_conv_status(const char *last_at, int64_t close_idle_days,
                       int64_t now);

// Maps every table: merges, groups, orphans, enums, orders, templates.
// Returns 0 or -1 with err naming the row and column of bad input.
int import_map_all(imp_source *src, int64_t close_idle_days, int64_t now,
                   char *err, size_t errlen);

// Adds a problem line to the report (printf-style).
void import_problem(imp_source *src, const char *fmt, ...)
        __attribute__((format(printf, 2, 3)));

// ---------------------------------------------------------------------------
// report.c: the checks and the report

#define IMP_TABLES 9

typedef struct imp_table {
	const char *name;
	int64_t source;   // rows in the legacy tables
	int64_t expected; // rows Parley must hold for them
	int64_t parley;   // what GetImportSummary says (-1: not asked)
	int64_t created;  // created by this run
	int64_t existing; // there already
	char sha_source[65], sha_parley[65];
	double seconds;
	int64_t rows_differ; // rows named by the row check (-1: not run)
} imp_table;

// A row that differs, named by the row check (import_compare_rows).
typedef struct imp_bad_row {
	const char *table;   // the table's name (static)
	char *legacy_id;     // the legacy key (malloc'd)
	const char *problem; // IMP_MISSING, IMP_EXTRA or IMP_DIFFERS (static)
} imp_bad_row;

#define IMP_MISSING         "missing in Parley"
#define IMP_EXTRA           "not in the legacy data"
#define IMP_DIFFERS         "content differs"
#define IMP_NAMED_PER_TABLE 100 // rows named per table in the report

// One row as a service lists it (GetImportSummary rows_of_table): its key
// and the SHA-256 hex of its text. Both strings malloc'd.
typedef struct imp_digest {
	char *key;
	char *sha256;
} imp_digest;

typedef struct imp_report {
	imp_table t[IMP_TABLES]; // contacts, conversations, messages, orders,
	                         // campaigns, campaign_recipients,
	                         // checkpoints, checkpoint_blobs,
	                         // checkpoint_writes
	char tenant_id[40], tenant_slug[64], channel_id[40], agent_id[40];
	bool tenant_created, dry_run;
	struct {
		const char *table;
		char status[32];
		int64_t source, parley;
	} st[64]; // per-status comparisons
	int n_st;
	char **mismatches; // named rows/tables that differ
	size_t n_mismatches, cap_mismatches;
	imp_bad_row *bad_rows; // at most IMP_NAMED_PER_TABLE per table
	size_t n_bad_rows, cap_bad_rows;
	int64_t bad_rows_total; // every differing row, named or not
	double seconds;
	// where the time went: reading the source, mapping, setting the
	// tenant up, writing, checksums + GetImportSummary
	double read_s, map_s, setup_s, write_s, verify_s;
	long rpc_calls, rpc_writes; // calls made to the services, writes
	int exit_code;              // 0 ok, 2 verification failed
} imp_report;

enum {
	IMP_T_CONTACTS,
	IMP_T_CONVERSATIONS,
	IMP_T_MESSAGES,
	IMP_T_ORDERS,
	IMP_T_CAMPAIGNS,
	IMP_T_RECIPIENTS,
	IMP_T_CHECKPOINTS,
	IMP_T_BLOBS,
	IMP_T_WRITES,
};

void import_report_init(imp_report *r);
void import_report_fini(imp_report *r);
void import_mismatch(imp_report *r, const char *fmt, ...)
        __attribute__((format(printf, 2, 3)));

// The source side's checksums (same definitions as GetImportSummary on
// each service) into r->t[].sha_source and expected counts.
void import_source_checksums(const imp_source *src, imp_report *r);

// The row check of one table whose checksum differs: the source rows'
// digests (the text that feeds the table's checksum) against the service's
// rows (`parley`, any order), rows missing, extra or different named in
// r->bad_rows (up to IMP_NAMED_PER_TABLE) and counted in
// r->t[table].rows_differ and r->bad_rows_total.
void import_compare_rows(imp_report *r, const imp_source *src, int table,
                         const imp_digest *parley, size_t n_parley);

// Frees what import_fetch_rows returned.
void import_digests_free(imp_digest *d, size_t n);

// Human-readable report.
void import_report_print(const imp_report *r, const imp_source *src, FILE *f);
// JSON report (malloc'd text, caller frees).
char *import_report_json(const imp_report *r, const imp_source *src);

// ---------------------------------------------------------------------------
// writer.c: the services

typedef struct imp_opts {
	const char *source_url;
	const char *tenant_slug;
	const char *tenant_name;
	const char *admin_email, *admin_password, *admin_name;
	const char *tenants_url, *billing_url, *agents_url, *messaging_url;
	const char *secret;
	// WhatsApp channel credentials (all empty: a disabled channel)
	const char *wa_phone_number_id, *wa_access_token, *wa_app_secret,
	        *wa_verify_token, *wa_api_base_url, *wa_display_phone;
	const char *template_language;
	int64_t close_idle_days;
	int batch; // rows per bulk call (default 1000)
	bool dry_run;
	bool quiet; // no progress lines
	const char *report_path;
	FILE *out; // the human report (stdout)
} imp_opts;

typedef struct imp_writer imp_writer;

int import_writer_open(imp_writer **out, const imp_opts *o, char *err,
                       size_t errlen);
void import_writer_close(imp_writer *w);
// RPCs made so far, and how many of them wrote.
void import_writer_counts(const imp_writer *w, long *calls, long *writes);

// Finds the tenant by slug; creates it (SignUp), puts it on `unlimited`,
// makes "Default bot" and the WhatsApp channel when missing. Lookups only
// when dry (found=false when the tenant does not exist).
int import_setup(imp_writer *w, const imp_opts *o, imp_report *r, bool dry,
                 bool *found, char *err, size_t errlen);

typedef void (*imp_progress_fn)(void *arg, int table, size_t done,
                                size_t total);

int import_write_all(imp_writer *w, const imp_opts *o, imp_source *src,
                     imp_report *r, imp_progress_fn prog, void *parg, char *err,
                     size_t errlen);

// GetImportSummary of messaging and agents into r (parley counts, sha).
int import_fetch_summary(imp_writer *w, imp_report *r, char *err,
                         size_t errlen);

// Every row of a table as its service lists it (GetImportSummary with
// rows_of_table, page by page) into *out (malloc'd, import_digests_free).
// Returns 0, 1 when the service does not list rows (an older version:
// no rows and no cursor for a table it holds rows of), or -1 with err.
int import_fetch_rows(imp_writer *w, const imp_report *r, int table,
                      imp_digest **out, size_t *n, char *err, size_t errlen);

// ---------------------------------------------------------------------------
// run.c, cli.c

// The whole import. Returns the process exit code: 0 done and verified,
// 1 an error (err set; nothing half-written: every batch is one
// transaction and a rerun continues), 2 verification failed (report names
// what differs).
int import_run(const imp_opts *o, imp_report *r, char *err, size_t errlen);

int import_cli_main(int argc, char **argv);

#endif

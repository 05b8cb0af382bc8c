// Reads the legacy database: one read-only REPEATABLE READ transaction (a
// single consistent snapshot, and PostgreSQL refuses any write in it), every
// table and column checked first so a missing one is named.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libpq-fe.h>

#include "import.h"

#define TS(c)                                                                  \
	"to_char((" c ") AT TIME ZONE 'UTC', "                                 \
	"'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')"

static const struct {
	const char *table, *columns;
} need[] = {
	{ "contacts", "id,phone_number,name,thread_id,created_at,updated_at" },
	{ "messages", "id,message_id,contact_id,direction,message_type,"
	              "content_text,content_url,status,sent_at,metadata,"
	              "created_at" },
	{ "orders", "id,contact_id,message_id,order_details,status,created_at,"
	            "updated_at" },
	{ "campaigns", "id,name,type,message_template,is_active,created_at" },
	{ "campaign_subscribers", "id,campaign_id,contact_id,status,"
	                          "subscribed_at" },
	{ "checkpoints", "thread_id,checkpoint_ns,checkpoint_id,"
	                 "parent_checkpoint_id,type,checkpoint,metadata" },
	{ "checkpoint_blobs", "thread_id,checkpoint_ns,channel,version,type,"
	                      "blob" },
	{ "checkpoint_writes", "thread_id,checkpoint_ns,checkpoint_id,task_id,"
	                       "idx,channel,type,blob,task_path" },
};

static const char *
val(imp_source *s, PGresult *r, int row, int col)
{
	if (PQgetisnull(r, row, col))
		return NULL;
	return pl_arena_strndup(&s->arena, PQgetvalue(r, row, col),
	                        (size_t)PQgetlength(r, row, col));
}

static uint8_t *
bytes(imp_source *s, PGresult *r, int row, int col, size_t *len)
{
	size_t n = 0;
	unsigned char *raw;
	uint8_t *out;

	*len = 0;
	if (PQgetisnull(r, row, col))
		return NULL;
	raw = PQunescapeBytea((const unsigned char *)PQgetvalue(r, row, col),
	                      &n);
	if (raw == NULL)
		return NULL;
	out = pl_arena_alloc(&s->arena, n + 1);
	if (out != NULL) {
		memcpy(out, raw, n);
		*len = n;
	}
	PQfreemem(raw);
	return out;
}

static PGresult *
run(PGconn *c, const char *sql, const char *what, char *err, size_t errlen)
{
	PGresult *r = PQexec(c, sql);

	if (PQresultStatus(r) != PGRES_TUPLES_OK &&
	    PQresultStatus(r) != PGRES_COMMAND_OK) {
		snprintf(err, errlen, "could not read %s from the source: %s",
		         what, PQresultErrorMessage(r));
		err[strcspn(err, "\n")] = '\0';
		PQclear(r);
		return NULL;
	}
	return r;
}

// Every table and column the import reads, named when missing.
static int
check_schema(PGconn *c, char *err, size_t errlen)
{
	for (size_t i = 0; i < sizeof(need) / sizeof(need[0]); i++) {
		const char *p[1] = { need[i].table };
		PGresult *r = PQexecParams(
		        c,
		        "SELECT attname FROM pg_attribute WHERE attrelid = "
		        "to_regclass($1) AND attnum > 0 AND NOT attisdropped",
		        1, NULL, p, NULL, NULL, 0);
		char cols[256], *save = NULL, *tok;

		if (PQresultStatus(r) != PGRES_TUPLES_OK) {
			snprintf(err, errlen,
			         "could not inspect the source: %s",
			         PQresultErrorMessage(r));
			err[strcspn(err, "\n")] = '\0';
			PQclear(r);
			return -1;
		}
		if (PQntuples(r) == 0) {
			snprintf(err, errlen,
			         "the source has no table \"%s\" (is it the "
			         "legacy bot database?)",
			         need[i].table);
			PQclear(r);
			return -1;
		}
		snprintf(cols, sizeof(cols), "%s", need[i].columns);
		for (tok = strtok_r(cols, ",", &save); tok != NULL;
		     tok = strtok_r(NULL, ",", &save)) {
			bool found = false;
			for (int k = 0; k < PQntuples(r) && !found; k++)
				found = strcmp(PQgetvalue(r, k, 0), tok) == 0;
			if (!found) {
				snprintf(err, errlen,
				         "source table \"%s\" has no column "
				         "\"%s\"",
				         need[i].table, tok);
				PQclear(r);
				return -1;
			}
		}
		PQclear(r);
	}
	return 0;
}

#define GROW(arr, n, r)                                                        \
	do {                                                                   \
		(arr) = pl_arena_zalloc(&src->arena,                           \
		                        sizeof(*(arr)) *                       \
		                                ((size_t)PQntuples(r) + 1));   \
		(n) = (size_t)PQntuples(r);                                    \
	} while (0)

static int
read_all(PGconn *c, imp_source *src, char *err, size_t errlen)
{
	PGresult *r = NULL;

	// Orders by the legacy key: the import (and its checksums) walk the
	// rows in this order.
	if ((r = run(c,
	             "SELECT id::text, phone_number::text, name::text, "
	             "thread_id::text, " TS("created_at") ", " TS(
	                     "updated_at") " FROM contacts ORDER BY "
	                                   "contacts.id",
	             "contacts", err, errlen)) == NULL)
		return -1;
	GROW(src->contacts, src->n_contacts, r);
	for (size_t i = 0; i < src->n_contacts; i++) {
		imp_contact *x = &src->contacts[i];
		x->id = val(src, r, i, 0);
		x->phone = val(src, r, i, 1);
		x->name = val(src, r, i, 2);
		x->thread_id = val(src, r, i, 3);
		x->created_at = val(src, r, i, 4);
		x->updated_at = val(src, r, i, 5);
	}
	PQclear(r);

	if ((r = run(c,
	             "SELECT id::text, message_id::text, contact_id::text, "
	             "direction::text, message_type::text, "
	             "content_text::text, "
	             "content_url::text, status::text, " TS(
	                     "sent_at") ", metadata::text, " TS("created_"
	                                                        "at") " FRO"
	                                                              "M "
	                                                              "mess"
	                                                              "ages"
	                                                              " ORD"
	                                                              "ER "
	                                                              "BY "
	                                                              "mess"
	                                                              "ages"
	                                                              ".id",
	             "messages", err, errlen)) == NULL)
		return -1;
	GROW(src->messages, src->n_messages, r);
	for (size_t i = 0; i < src->n_messages; i++) {
		imp_message *x = &src->messages[i];
		x->id = val(src, r, i, 0);
		x->message_id = val(src, r, i, 1);
		x->contact_id = val(src, r, i, 2);
		x->direction = val(src, r, i, 3);
		x->type = val(src, r, i, 4);
		x->text = val(src, r, i, 5);
		x->url = val(src, r, i, 6);
		x->status = val(src, r, i, 7);
		x->sent_at = val(src, r, i, 8);
		x->metadata = val(src, r, i, 9);
		x->created_at = val(src, r, i, 10);
	}
	PQclear(r);

	if ((r = run(c,
	             "SELECT id::text, contact_id::text, message_id::text, "
	             "order_details::text, status::text, " TS(
	                     "created_at") ", " TS("updated_at") " FROM orders "
	                                                         "ORDER BY "
	                                                         "orders.id",
	             "orders", err, errlen)) == NULL)
		return -1;
	GROW(src->orders, src->n_orders, r);
	for (size_t i = 0; i < src->n_orders; i++) {
		imp_order *x = &src->orders[i];
		x->id = val(src, r, i, 0);
		x->contact_id = val(src, r, i, 1);
		x->message_id = val(src, r, i, 2);
		x->details = val(src, r, i, 3);
		x->status = val(src, r, i, 4);
		x->created_at = val(src, r, i, 5);
		x->updated_at = val(src, r, i, 6);
	}
	PQclear(r);

	if ((r = run(c,
	             "SELECT id::text, name::text, type::text, "
	             "message_template::text, is_active::text, " TS(
	                     "created_at") " FROM campaigns ORDER BY "
	                                   "campaigns.id",
	             "campaigns", err, errlen)) == NULL)
		return -1;
	GROW(src->campaigns, src->n_campaigns, r);
	for (size_t i = 0; i < src->n_campaigns; i++) {
		imp_campaign *x = &src->campaigns[i];
		x->id = val(src, r, i, 0);
		x->name = val(src, r, i, 1);
		x->type = val(src, r, i, 2);
		x->tmpl = val(src, r, i, 3);
		x->is_active = val(src, r, i, 4);
		x->created_at = val(src, r, i, 5);
	}
	PQclear(r);

	if ((r = run(c,
	             "SELECT id::text, campaign_id::text, contact_id::text, "
	             "status::text, " TS(
	                     "subscribed_at") " FROM "
	                                      "campaign_subscribers "
	                                      "ORDER BY "
	                                      "campaign_subscribers.id",
	             "campaign_subscribers", err, errlen)) == NULL)
		return -1;
	GROW(src->subs, src->n_subs, r);
	for (size_t i = 0; i < src->n_subs; i++) {
		imp_sub *x = &src->subs[i];
		x->id = val(src, r, i, 0);
		x->campaign_id = val(src, r, i, 1);
		x->contact_id = val(src, r, i, 2);
		x->status = val(src, r, i, 3);
		x->subscribed_at = val(src, r, i, 4);
	}
	PQclear(r);

	if ((r = run(c,
	             "SELECT thread_id, checkpoint_ns, checkpoint_id, "
	             "parent_checkpoint_id, type, checkpoint::text, "
	             "metadata::text FROM checkpoints ORDER BY thread_id "
	             "COLLATE \"C\", checkpoint_ns COLLATE \"C\", "
	             "checkpoint_id COLLATE \"C\"",
	             "checkpoints", err, errlen)) == NULL)
		return -1;
	GROW(src->ckpts, src->n_ckpts, r);
	for (size_t i = 0; i < src->n_ckpts; i++) {
		imp_ckpt *x = &src->ckpts[i];
		x->thread_id = val(src, r, i, 0);
		x->ns = val(src, r, i, 1);
		x->id = val(src, r, i, 2);
		x->parent = val(src, r, i, 3);
		x->type = val(src, r, i, 4);
		x->state = val(src, r, i, 5);
		x->metadata = val(src, r, i, 6);
	}
	PQclear(r);

	if ((r = run(c,
	             "SELECT thread_id, checkpoint_ns, channel, version, type, "
	             "blob FROM checkpoint_blobs ORDER BY thread_id COLLATE "
	             "\"C\", checkpoint_ns COLLATE \"C\", channel COLLATE "
	             "\"C\", version COLLATE \"C\"",
	             "checkpoint_blobs", err, errlen)) == NULL)
		return -1;
	GROW(src->blobs, src->n_blobs, r);
	for (size_t i = 0; i < src->n_blobs; i++) {
		imp_blob *x = &src->blobs[i];
		x->thread_id = val(src, r, i, 0);
		x->ns = val(src, r, i, 1);
		x->channel = val(src, r, i, 2);
		x->version = val(src, r, i, 3);
		x->type = val(src, r, i, 4);
		x->is_null = PQgetisnull(r, i, 5);
		x->data = bytes(src, r, i, 5, &x->len);
	}
	PQclear(r);

	if ((r = run(c,
	             "SELECT thread_id, checkpoint_ns, checkpoint_id, task_id, "
	             "idx::text, channel, type, blob, task_path FROM "
	             "checkpoint_writes ORDER BY thread_id COLLATE \"C\", "
	             "checkpoint_ns COLLATE \"C\", checkpoint_id COLLATE "
	             "\"C\", task_id COLLATE \"C\", idx",
	             "checkpoint_writes", err, errlen)) == NULL)
		return -1;
	GROW(src->writes, src->n_writes, r);
	for (size_t i = 0; i < src->n_writes; i++) {
		imp_write *x = &src->writes[i];
		x->thread_id = val(src, r, i, 0);
		x->ns = val(src, r, i, 1);
		x->ckpt_id = val(src, r, i, 2);
		x->task_id = val(src, r, i, 3);
		x->idx = val(src, r, i, 4);
		x->channel = val(src, r, i, 5);
		x->type = val(src, r, i, 6);
		x->data = bytes(src, r, i, 7, &x->len);
		x->task_path = val(src, r, i, 8);
	}
	PQclear(r);
	return 0;
}

int
import_read(const char *url, imp_source *src, char *err, size_t errlen)
{
	PGconn *c;
	PGresult *r = NULL;
	int rv = -1;

	memset(src, 0, sizeof(*src));
	pl_arena_init(&src->arena, 1 << 20, 0);
	src->system_group = -1;
	c = PQconnectdb(url);
	if (PQstatus(c) != CONNECTION_OK) {
		snprintf(err, errlen, "could not connect to the source: %s",
		         PQerrorMessage(c));
		err[strcspn(err, "\n")] = '\0';
		PQfinish(c);
		return -1;
	}
	// One snapshot for every table, and a transaction in which
	// PostgreSQL refuses any write.
	if ((r = run(c, "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY",
	             "a snapshot", err, errlen)) == NULL)
		goto out;
	PQclear(r);
	if (check_schema(c, err, errlen) != 0)
		goto out;
	rv = read_all(c, src, err, errlen);
	if ((r = PQexec(c, "ROLLBACK")) != NULL)
		PQclear(r);
out:
	PQfinish(c);
	return rv;
}

void
import_source_free(imp_source *src)
{
	for (size_t i = 0; i < src->n_problems; i++)
		free(src->problems[i]);
	free(src->problems);
	for (size_t i = 0; i < src->n_groups; i++)
		free(src->groups[i].msgs);
	free(src->groups);
	free(src->merges);
	free(src->orphan_threads);
	pl_arena_fini(&src->arena);
	memset(src, 0, sizeof(*src));
}

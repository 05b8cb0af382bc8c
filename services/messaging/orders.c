// Orders and their items: the total is the sum of the items (computed on
// read, never typed in); status transitions are validated.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "pl/id.h"
#include "pl/log.h"
#include "engage.h"

static const char *const ostatus_names[] = { "",          "pending",
	                                     "confirmed", "shipped",
	                                     "delivered", "cancelled" };

bool
engage_order_transition_ok(const char *from, const char *to)
{
	static const char *const ok[][2] = {
		{ "pending", "confirmed" },   { "confirmed", "shipped" },
		{ "shipped", "delivered" },   { "pending", "cancelled" },
		{ "confirmed", "cancelled" },
	};

	if (from == NULL || to == NULL)
		return false;
	if (strcmp(from, to) == 0)
		return true;
	for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++)
		if (strcmp(ok[i][0], from) == 0 && strcmp(ok[i][1], to) == 0)
			return true;
	return false;
}

// Items as a JSON array for the store; a violation names the item.
static int
items_json(pl_call *call, EG_M(OrderItem) * *items, size_t n, char **out)
{
	json_t *arr;
	char *s;

	if (n == 0)
		return pl_call_violation(call, "items", "at least one item");
	if (n > EG_MAX_ITEMS)
		return pl_call_violation(call, "items", "at most %d items",
		                         EG_MAX_ITEMS);
	arr = json_array();
	for (size_t i = 0; i < n; i++) {
		const EG_M(OrderItem) *it = items[i];
		char f[32];
		if (!eg_nz(it->name) || strlen(it->name) > 256 ||
		    (it->sku && strlen(it->sku) > 128)) {
			json_decref(arr);
			snprintf(f, sizeof(f), "items[%zu].name", i);
			return pl_call_violation(call, f,
			                         "must be 1 to 256 characters "
			                         "(sku at most 128)");
		}
		if (it->quantity < 1 || it->quantity > 1000000) {
			json_decref(arr);
			snprintf(f, sizeof(f), "items[%zu].quantity", i);
			return pl_call_violation(call, f,
			                         "must be 1 to 1000000");
		}
		if (it->unit_price_minor < 0 ||
		    it->unit_price_minor > 1000000000000LL) {
			json_decref(arr);
			snprintf(f, sizeof(f), "items[%zu].unit_price_minor",
			         i);
			return pl_call_violation(
			        call, f, "must be 0 to 10^12 minor units");
		}
		json_array_append_new(
		        arr,
		        json_pack("{s:i, s:s, s:s, s:I, s:I}", "position",
		                  (int)i, "sku", it->sku ? it->sku : "", "name",
		                  it->name, "quantity",
		                  (json_int_t)it->quantity, "unit_price_minor",
		                  (json_int_t)it->unit_price_minor));
	}
	s = json_dumps(arr, JSON_COMPACT);
	json_decref(arr);
	*out = pl_arena_strdup(call->arena, s);
	free(s);
	return PL_OK;
}

static int
check_currency(pl_call *call, const char *c)
{
	if (c == NULL || strlen(c) != 3 || c[0] < 'A' || c[0] > 'Z' ||
	    c[1] < 'A' || c[1] > 'Z' || c[2] < 'A' || c[2] > 'Z')
		return pl_call_violation(call, "currency",
		                         "must be an ISO 4217 code (\"EUR\")");
	return PL_OK;
}

static const char INSERT_ITEMS[] =
        "INSERT INTO messaging.order_items (tenant_id, order_id, position, "
        "sku, name, quantity, unit_price_minor) SELECT $1, $2, x.position, "
        "x.sku, x.name, x.quantity, x.unit_price_minor FROM "
        "jsonb_to_recordset($3::jsonb) AS x(position int, sku text, name "
        "text, quantity bigint, unit_price_minor bigint)";

static int
order_event(pl_db *db, const char *tenant, const char *type, const char *id,
            const char *status)
{
	json_t *pj = json_pack("{s:s, s:s}", "order_id", id, "status", status);
	char *p = json_dumps(pj, JSON_COMPACT);
	int rv = eg_event(db, tenant, type, NULL, p);

	free(p);
	json_decref(pj);
	return rv;
}

// Creates an order in the caller's transaction; id_out gets its id.
// PL_NOT_FOUND when the contact (or conversation) is not the tenant's.
int
engage_order_create(pl_call *call, pl_db *db, const char *tenant,
                    const char *contact_id, const char *conversation_id,
                    const char *message_id, const char *currency,
                    const char *items, const char *address, const char *notes,
                    const char *status, char id_out[40])
{
	const char *p[10];
	PGresult *r = NULL;
	int rv;

	pl_uuid7_str(id_out);
	p[0] = tenant;
	p[1] = id_out;
	p[2] = contact_id;
	p[3] = conversation_id;
	p[4] = message_id;
	p[5] = currency;
	p[6] = address ? address : "{}";
	p[7] = notes ? notes : "";
	p[8] = status;
	// The conversation given, or the contact's latest; both the tenant's.
	rv = eg_exec(
	        call, db,
	        "INSERT INTO messaging.orders (tenant_id, id, contact_id, "
	        "conversation_id, message_id, currency, address, notes, "
	        "status, confirmed_at) SELECT $1, $2, k.id, "
	        "coalesce($4::uuid, (SELECT cv.id FROM "
	        "messaging.conversations cv WHERE cv.tenant_id = $1 AND "
	        "cv.contact_id = k.id ORDER BY cv.created_at DESC LIMIT "
	        "1)), $5::uuid, $6, $7::jsonb, $8, $9, CASE WHEN $9 = "
	        "'confirmed' THEN now() END FROM messaging.contacts k WHERE "
	        "k.tenant_id = $1 AND k.id = $3::uuid AND ($4::uuid IS "
	        "NULL OR EXISTS (SELECT 1 FROM messaging.conversations c2 "
	        "WHERE c2.tenant_id = $1 AND c2.id = $4::uuid AND "
	        "c2.contact_id = k.id))",
	        9, p, &r, "create the order");
	if (rv != PL_OK)
		return rv;
	if (atoi(PQcmdTuples(r)) != 1) {
		PQclear(r);
		return call ? pl_call_error(call, PL_NOT_FOUND,
		                            "contact or conversation not found")
		            : PL_NOT_FOUND;
	}
	PQclear(r);
	{
		const char *q[3] = { tenant, id_out, items };
		if ((rv = eg_exec(call, db, INSERT_ITEMS, 3, q, NULL,
		                  "store the order's items")) != PL_OK)
			return rv;
	}
	return order_event(db, tenant, "order.created", id_out, status);
}

static int
get_in(pl_call *call, pl_db *db, const char *id, EG_M(Order) * *out)
{
	const char *p[2] = { eg_tenant(call), id };
	PGresult *r = NULL;
	int rv = eg_exec(call, db,
	                 pl_arena_printf(call->arena,
	                                 "SELECT %s FROM messaging.orders o "
	                                 "WHERE o.tenant_id = $1 AND o.id = $2",
	                                 EG_SQL_ORDER_JSON),
	                 2, p, &r, "read the order");

	if (rv != PL_OK)
		return rv;
	rv = eg_row_pb(call, r, &parley__messaging__v1__order__descriptor,
	               (void **)out);
	PQclear(r);
	if (rv == PL_NOT_FOUND)
		return pl_call_error(call, PL_NOT_FOUND, "order not found");
	return rv;
}

typedef struct create_arg {
	const EG_M(CreateOrderRequest) * in;
	const char *items, *address;
	EG_M(Order) * out;
} create_arg;

static int
create_fn(pl_call *call, pl_db *db, void *arg)
{
	create_arg *x = arg;
	char id[40];
	int rv = engage_order_create(
	        call, db, eg_tenant(call), x->in->contact_id,
	        eg_nz(x->in->conversation_id), eg_nz(x->in->message_id),
	        x->in->currency, x->items, x->address, x->in->notes, "pending",
	        id);

	return rv != PL_OK ? rv : get_in(call, db, id, &x->out);
}

int
eg_create_order(pl_call *call, const void *inp, void *outp)
{
	const EG_M(CreateOrderRequest) *in = inp;
	EG_M(CreateOrderResponse) *out = outp;
	create_arg x = { in, NULL, NULL, NULL };
	char *items;
	int rv;

	if ((rv = eg_need_uuid(call, "contact_id", in->contact_id)) != PL_OK)
		return rv;
	if ((eg_nz(in->conversation_id) &&
	     !pl_uuid_valid(in->conversation_id)) ||
	    (eg_nz(in->message_id) && !pl_uuid_valid(in->message_id)))
		return pl_call_violation(call, "conversation_id",
		                         "conversation_id and message_id must "
		                         "be valid ids");
	if ((rv = check_currency(call, in->currency)) != PL_OK ||
	    (rv = items_json(call, in->items, in->n_items, &items)) != PL_OK ||
	    (rv = eg_json_arg(call, "address", in->address, false, 4096, "{}",
	                      &x.address)) != PL_OK)
		return rv;
	if (in->notes && strlen(in->notes) > 2000)
		return pl_call_violation(call, "notes",
		                         "is longer than 2000 characters");
	x.items = items;
	if ((rv = eg_tx(call, eg_tenant(call), create_fn, &x)) != PL_OK)
		return rv;
	out->order = x.out;
	out->id = x.out->id;
	return PL_OK;
}

typedef struct upd_arg {
	const EG_M(UpdateOrderRequest) * in;
	const char *items, *address, *notes;
	EG_M(Order) * out;
	int state; // 0 ok, 1 missing, 2 not pending
} upd_arg;

static int
upd_fn(pl_call *call, pl_db *db, void *arg)
{
	upd_arg *x = arg;
	const char *p[4] = { eg_tenant(call), x->in->id, x->address, x->notes };
	PGresult *r = NULL;
	int rv;

	if ((rv = eg_exec(call, db,
	                  "SELECT status FROM messaging.orders WHERE tenant_id "
	                  "= $1 AND id = $2 FOR UPDATE",
	                  2, p, &r, "read the order")) != PL_OK)
		return rv;
	x->state = PQntuples(r) == 0                             ? 1
	           : strcmp(PQgetvalue(r, 0, 0), "pending") != 0 ? 2
	                                                         : 0;
	PQclear(r);
	if (x->state != 0)
		return PL_OK;
	if ((rv = eg_exec(call, db,
	                  "UPDATE messaging.orders SET address = "
	                  "coalesce($3::jsonb, address), notes = coalesce($4, "
	                  "notes), updated_at = now() WHERE tenant_id = $1 AND "
	                  "id = $2",
	                  4, p, NULL, "update the order")) != PL_OK)
		return rv;
	if (x->items != NULL) {
		const char *q[3] = { eg_tenant(call), x->in->id, x->items };
		if ((rv = eg_exec(call, db,
		                  "DELETE FROM messaging.order_items WHERE "
		                  "tenant_id = $1 AND order_id = $2",
		                  2, q, NULL, "replace the items")) != PL_OK ||
		    (rv = eg_exec(call, db, INSERT_ITEMS, 3, q, NULL,
		                  "store the order's items")) != PL_OK)
			return rv;
	}
	if ((rv = order_event(db, eg_tenant(call), "order.updated", x->in->id,
	                      "pending")) != PL_OK)
		return rv;
	return get_in(call, db, x->in->id, &x->out);
}

int
eg_update_order(pl_call *call, const void *inp, void *outp)
{
	const EG_M(UpdateOrderRequest) *in = inp;
	EG_M(UpdateOrderResponse) *out = outp;
	upd_arg x = { in, NULL, NULL, NULL, NULL, 0 };
	bool all = in->n_update_mask == 0;
	char *items = NULL;
	int rv;

	if (!pl_uuid_valid(in->id))
		return pl_call_error(call, PL_NOT_FOUND, "order not found");
	for (size_t i = 0; i < in->n_update_mask; i++) {
		const char *m = in->update_mask[i];
		if (strcmp(m, "items") && strcmp(m, "address") &&
		    strcmp(m, "notes"))
			return pl_call_violation(call, "update_mask",
			                         "unknown field \"%s\"", m);
		if (strcmp(m, "items") == 0 &&
		    (rv = items_json(call, in->items, in->n_items, &items)) !=
		            PL_OK)
			return rv;
		if (strcmp(m, "address") == 0 &&
		    (rv = eg_json_arg(call, "address", in->address, false, 4096,
		                      "{}", &x.address)) != PL_OK)
			return rv;
		if (strcmp(m, "notes") == 0)
			x.notes = in->notes ? in->notes : "";
	}
	if (all) {
		if (in->n_items > 0 &&
		    (rv = items_json(call, in->items, in->n_items, &items)) !=
		            PL_OK)
			return rv;
		if ((rv = eg_json_arg(call, "address", in->address, false, 4096,
		                      NULL, &x.address)) != PL_OK)
			return rv;
		x.notes = eg_nz(in->notes);
	}
	if (x.notes && strlen(x.notes) > 2000)
		return pl_call_violation(call, "notes",
		                         "is longer than 2000 characters");
	x.items = items;
	if ((rv = eg_tx(call, eg_tenant(call), upd_fn, &x)) != PL_OK)
		return rv;
	if (x.state == 1)
		return pl_call_error(call, PL_NOT_FOUND, "order not found");
	if (x.state == 2)
		return pl_call_error(call, PL_FAILED_PRECONDITION,
		                     "only a pending order changes its items, "
		                     "address or notes");
	out->order = x.out;
	return PL_OK;
}

int
eg_get_order(pl_call *call, const void *inp, void *outp)
{
	const EG_M(GetOrderRequest) *in = inp;
	EG_M(GetOrderResponse) *out = outp;
	const char *p[2] = { eg_tenant(call), in->id };

	if (!pl_uuid_valid(in->id))
		return pl_call_error(call, PL_NOT_FOUND, "order not found");
	return eg_get(call, eg_tenant(call),
	              pl_arena_printf(call->arena,
	                              "SELECT %s FROM messaging.orders o "
	                              "WHERE o.tenant_id = $1 AND o.id = $2",
	                              EG_SQL_ORDER_JSON),
	              2, p, &parley__messaging__v1__order__descriptor,
	              (void **)&out->order, "order");
}

int
eg_list_orders(pl_call *call, const void *inp, void *outp)
{
	const EG_M(ListOrdersRequest) *in = inp;
	EG_M(ListOrdersResponse) *out = outp;
	char *after, lim[16];
	int size, rv;

	if ((rv = eg_page(call, in->page, &size, &after)) != PL_OK)
		return rv;
	if (in->status < 0 || in->status > 5)
		return pl_call_violation(call, "status",
		                         "is not an order status");
	if ((eg_nz(in->contact_id) && !pl_uuid_valid(in->contact_id)) ||
	    (eg_nz(in->conversation_id) && !pl_uuid_valid(in->conversation_id)))
		return pl_call_violation(call, "contact_id",
		                         "ids must be valid");
	snprintf(lim, sizeof(lim), "%d", size + 1);
	{
		const char *p[6] = {
			eg_tenant(call),
			after,
			lim,
			in->status ? ostatus_names[in->status] : NULL,
			eg_nz(in->contact_id),
			eg_nz(in->conversation_id),
		};
		return eg_list(
		        call, eg_tenant(call),
		        pl_arena_printf(
		                call->arena,
		                "SELECT %s FROM messaging.orders o WHERE "
		                "o.tenant_id = $1 AND ($2::uuid IS NULL OR "
		                "o.id "
		                "< $2::uuid) AND ($4::text IS NULL OR o.status "
		                "= $4) AND ($5::uuid IS NULL OR o.contact_id = "
		                "$5::uuid) AND ($6::uuid IS NULL OR "
		                "o.conversation_id = $6::uuid) ORDER BY o.id "
		                "DESC LIMIT $3",
		                EG_SQL_ORDER_JSON),
		        6, p, size, &parley__messaging__v1__order__descriptor,
		        (void ***)&out->orders, &out->n_orders,
		        &out->next_page_token);
	}
}

typedef struct del_arg {
	const char *id;
	int state; // 0 deleted, 1 missing, 2 not deletable
} del_arg;

static int
del_fn(pl_call *call, pl_db *db, void *arg)
{
	del_arg *x = arg;
	const char *p[2] = { eg_tenant(call), x->id };
	PGresult *r = NULL;
	int rv;

	if ((rv = eg_exec(call, db,
	                  "SELECT status FROM messaging.orders WHERE tenant_id "
	                  "= $1 AND id = $2 FOR UPDATE",
	                  2, p, &r, "read the order")) != PL_OK)
		return rv;
	x->state = PQntuples(r) == 0 ? 1
	           : (strcmp(PQgetvalue(r, 0, 0), "pending") == 0 ||
	              strcmp(PQgetvalue(r, 0, 0), "cancelled") == 0)
	                   ? 0
	                   : 2;
	PQclear(r);
	if (x->state != 0)
		return PL_OK;
	return eg_exec(call, db,
	               "DELETE FROM messaging.orders WHERE tenant_id = $1 AND "
	               "id = $2",
	               2, p, NULL, "delete the order");
}

int
eg_delete_order(pl_call *call, const void *inp, void *outp)
{
	const EG_M(DeleteOrderRequest) *in = inp;
	del_arg x = { in->id, 0 };
	int rv;

	(void)outp;
	if (!pl_uuid_valid(in->id))
		return pl_call_error(call, PL_NOT_FOUND, "order not found");
	if ((rv = eg_tx(call, eg_tenant(call), del_fn, &x)) != PL_OK)
		return rv;
	if (x.state == 1)
		return pl_call_error(call, PL_NOT_FOUND, "order not found");
	if (x.state == 2)
		return pl_call_error(call, PL_FAILED_PRECONDITION,
		                     "only pending or cancelled orders are "
		                     "deleted");
	return PL_OK;
}

// Moves an order in the caller's transaction. PL_NOT_FOUND, or
// PL_FAILED_PRECONDITION for a transition that is not allowed (with the
// call's error set when call is not NULL).
int
engage_order_set_status(pl_call *call, pl_db *db, const char *tenant,
                        const char *id, const char *to, const char *reason,
                        bool notify)
{
	const char *p[4] = { tenant, id, to, reason ? reason : "" };
	PGresult *r = NULL;
	char from[16], conv[40] = "", channel[40] = "";
	int rv;

	if ((rv = eg_exec(call, db,
	                  "SELECT o.status, coalesce(o.conversation_id::text, "
	                  "''), coalesce(c.channel_id::text, '') FROM "
	                  "messaging.orders o LEFT JOIN "
	                  "messaging.conversations c ON c.tenant_id = "
	                  "o.tenant_id AND c.id = o.conversation_id WHERE "
	                  "o.tenant_id = $1 AND o.id = $2 FOR UPDATE OF o",
	                  2, p, &r, "read the order")) != PL_OK)
		return rv;
	if (PQntuples(r) == 0) {
		PQclear(r);
		return call ? pl_call_error(call, PL_NOT_FOUND,
		                            "order not found")
		            : PL_NOT_FOUND;
	}
	snprintf(from, sizeof(from), "%s", PQgetvalue(r, 0, 0));
	snprintf(conv, sizeof(conv), "%s", PQgetvalue(r, 0, 1));
	snprintf(channel, sizeof(channel), "%s", PQgetvalue(r, 0, 2));
	PQclear(r);
	if (!engage_order_transition_ok(from, to))
		return call ? pl_call_error(
		                      call, PL_FAILED_PRECONDITION,
		                      "an order does not go from %s to %s",
		                      from, to)
		            : PL_FAILED_PRECONDITION;
	if (strcmp(from, to) == 0)
		return PL_OK; // the same status again: nothing to do
	if ((rv = eg_exec(
	             call, db,
	             "UPDATE messaging.orders SET status = $3, "
	             "status_reason = $4, confirmed_at = CASE WHEN $3 = "
	             "'confirmed' THEN now() ELSE confirmed_at END, "
	             "shipped_at = CASE WHEN $3 = 'shipped' THEN now() "
	             "ELSE shipped_at END, delivered_at = CASE WHEN $3 = "
	             "'delivered' THEN now() ELSE delivered_at END, "
	             "cancelled_at = CASE WHEN $3 = 'cancelled' THEN now() "
	             "ELSE cancelled_at END, updated_at = now() WHERE "
	             "tenant_id = $1 AND id = $2",
	             4, p, NULL, "update the order")) != PL_OK)
		return rv;
	if ((rv = order_event(db, tenant, "order.updated", id, to)) != PL_OK)
		return rv;
	if (notify && conv[0] && channel[0]) {
		// The confirmation (settings' order_confirmed_reply with
		// {{order_id}} and {{total}}) or a short status line.
		const char *q[3] = { tenant, id, to };
		char mid[40];
		if ((rv = eg_exec(
		             call, db,
		             "SELECT CASE WHEN $3 = 'confirmed' THEN "
		             "replace(replace(coalesce(nullif((SELECT "
		             "order_confirmed_reply FROM messaging.settings "
		             "WHERE "
		             "tenant_id = $1), ''), 'Your order {{order_id}} "
		             "is "
		             "confirmed. Total: {{total}}.'), '{{order_id}}', "
		             "$2), '{{total}}', (SELECT to_char(coalesce(sum("
		             "quantity * unit_price_minor), 0) / 100.0, "
		             "'FM999999999990.00') || ' ' || o.currency FROM "
		             "messaging.order_items WHERE tenant_id = $1 AND "
		             "order_id = $2::uuid)) ELSE 'Your order ' || $2 "
		             "|| "
		             "' is now ' || $3 || '.' END FROM "
		             "messaging.orders o "
		             "WHERE o.tenant_id = $1 AND o.id = $2::uuid",
		             3, q, &r, "write the confirmation")) != PL_OK)
			return rv;
		rv = eg_queue(db, tenant, conv, channel, "text",
		              PQgetvalue(r, 0, 0), NULL, NULL, mid);
		PQclear(r);
	}
	return rv;
}

typedef struct st_arg {
	const EG_M(UpdateOrderStatusRequest) * in;
	EG_M(Order) * out;
} st_arg;

static int
st_fn(pl_call *call, pl_db *db, void *arg)
{
	st_arg *x = arg;
	int rv = engage_order_set_status(call, db, eg_tenant(call), x->in->id,
	                                 ostatus_names[x->in->status],
	                                 x->in->reason, x->in->notify_contact);

	return rv != PL_OK ? rv : get_in(call, db, x->in->id, &x->out);
}

int
eg_update_order_status(pl_call *call, const void *inp, void *outp)
{
	const EG_M(UpdateOrderStatusRequest) *in = inp;
	EG_M(UpdateOrderStatusResponse) *out = outp;
	st_arg x = { in, NULL };
	int rv;

	if (!pl_uuid_valid(in->id))
		return pl_call_error(call, PL_NOT_FOUND, "order not found");
	if (in->status < 1 || in->status > 5)
		return pl_call_violation(call, "status",
		                         "is not an order status");
	if (in->reason && strlen(in->reason) > 1024)
		return pl_call_violation(call, "reason",
		                         "is longer than 1024 characters");
	if ((rv = eg_tx(call, eg_tenant(call), st_fn, &x)) != PL_OK)
		return rv;
	if (rv == PL_OK)
		messaging_kick(eg_svc(call));
	out->order = x.out;
	return PL_OK;
}

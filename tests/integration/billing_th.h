// What the billing integration tests share (test_billing_rpc.c,
// test_billing_close.c, test_billing_batch.c, test_billing_race.c,
// test_billing_lease.c): the method names, the principals they act as, the
// call, a tenant's subscription, SQL as the superuser, and the skip when
// there is no PostgreSQL. The including file
// defines `static pgh pg;` and `static svch h;` (the cluster and the
// service under test) before it includes this.
#ifndef PARLEY_TESTS_BILLING_TH_H
#define PARLEY_TESTS_BILLING_TH_H

#define M(x) "/parley.billing.v1.Billing/" x

#define NEED_PG()                                                              \
	do {                                                                   \
		if (!pg.running)                                               \
			skip();                                                \
		pl_arena_reset(&h.arena);                                      \
	} while (0)

static inline pl_principal
owner(const char *tenant)
{
	return svch_user(tenant, "0190aaaa-0000-7000-8000-000000000001", 4);
}

static inline pl_principal
viewer(const char *tenant)
{
	return svch_user(tenant, "0190aaaa-0000-7000-8000-000000000002", 1);
}

static inline pl_principal
platform(void)
{
	pl_principal p =
	        svch_user("", "0190aaaa-0000-7000-8000-0000000000ff", 0);
	p.platform_admin = true;
	return p;
}

static inline int
call(const char *m, const pl_principal *p, const void *in,
     const ProtobufCMessageDescriptor *d, void **out, pl_rpc_result *res)
{
	return svch_call(&h, m, p, in, d, out, res);
}

// The tenant's subscription, as its viewer reads it.
static inline billing_sub *
sub_of(const char *t)
{
	Parley__Billing__V1__GetSubscriptionRequest in =
	        PARLEY__BILLING__V1__GET_SUBSCRIPTION_REQUEST__INIT;
	Parley__Billing__V1__GetSubscriptionResponse *out = NULL;
	pl_principal v = viewer(t);
	assert_int_equal(
	        call(M("GetSubscription"), &v, &in,
	             &parley__billing__v1__get_subscription_response__descriptor,
	             (void **)&out, NULL),
	        PL_OK);
	return out->subscription;
}

#define SQL_MAX 1024

// SQL as the superuser (no row-level security). sql_text: the one value
// of a one-row query as text into out ("" for NULL); the test fails on
// anything else.
__attribute__((format(printf, 3, 4))) static inline void
sql_text(char *out, size_t len, const char *fmt, ...)
{
	char q[SQL_MAX], err[512] = "";
	va_list ap;
	PGconn *c;
	PGresult *r;

	va_start(ap, fmt);
	vsnprintf(q, sizeof(q), fmt, ap);
	va_end(ap);
	c = PQconnectdb(h.admin_url);
	r = PQexec(c, q);
	out[0] = '\0';
	if (PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1 &&
	    PQnfields(r) == 1)
		snprintf(out, len, "%s", PQgetvalue(r, 0, 0));
	else
		snprintf(err, sizeof(err), "%s (%d rows)", PQerrorMessage(c),
		         PQntuples(r));
	PQclear(r);
	PQfinish(c);
	if (err[0])
		fail_msg("sql_text: %s: %s", q, err);
}

__attribute__((format(printf, 1, 2))) static inline long long
sql_int(const char *fmt, ...)
{
	char q[SQL_MAX], v[64];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(q, sizeof(q), fmt, ap);
	va_end(ap);
	sql_text(v, sizeof(v), "%s", q);
	return strtoll(v, NULL, 10);
}

__attribute__((format(printf, 1, 2))) static inline void
sql_exec(const char *fmt, ...)
{
	char q[SQL_MAX];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(q, sizeof(q), fmt, ap);
	va_end(ap);
	assert_int_equal(pgh_exec_url(h.admin_url, q), 0);
}

#endif

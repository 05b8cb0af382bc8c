// The services' side: tenant, plan, agent and channel set-up, then the bulk
// import RPCs in batches (each batch one transaction on the service, keyed
// by legacy ids, so a rerun after a crash continues where it stopped).
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <pthread.h>
#include <signal.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>
#include <sodium.h>

#include "parley/billing/v1/billing.pb-c.h"
#include "parley/tenants/v1/tenants.pb-c.h"
#include "import.h"

#define MSG(x) Parley__Messaging__V1__##x
#define AG(x)  Parley__Agents__V1__##x
#define TN(x)  Parley__Tenants__V1__##x
#define BL(x)  Parley__Billing__V1__##x

#define BOT_NAME     "Default bot"
#define CHANNEL_NAME "WhatsApp (legacy import)"
#define MAX_BYTES    (2 * 1024 * 1024) // per request, under the 4 MiB limit

struct imp_writer {
	pl_rpc_client *tenants, *billing, *agents, *messaging;
	pl_arena arena;
	pl_arena arena2;  // campaigns and checkpoints, written beside orders
	pl_principal svc; // the importer acting for the tenant
	char tenant_id[40], channel_id[40], agent_id[40];
	long calls, writes; // RPCs made, of which writes
	long crash_after;   // test hook: SIGKILL itself after this many writes
	pthread_mutex_t mu; // calls/writes, and the parallel writers' state
};

static int
open_client(pl_rpc_client **c, const char *url, const char *secret,
            const char *what, char *err, size_t errlen)
{
	pl_rpc_client_config cc = { 0 };

	if (url == NULL || url[0] == '\0') {
		snprintf(err, errlen,
		         "no URL for the %s service (--%s-url or "
		         "PARLEY_%s_URL)",
		         what, what,
		         strcmp(what, "tenants") == 0   ? "TENANTS"
		         : strcmp(what, "billing") == 0 ? "BILLING"
		         : strcmp(what, "agents") == 0  ? "AGENTS"
		                                        : "MESSAGING");
		return -1;
	}
	cc.urls = url;
	cc.secret = secret;
	cc.service = "import";
	cc.timeout_ms = 120000;
	if (pl_rpc_client_open(c, &cc) != PL_OK) {
		snprintf(err, errlen, "could not open a client for %s at %s",
		         what, url);
		return -1;
	}
	return 0;
}

int
import_writer_open(imp_writer **out, const imp_opts *o, char *err,
                   size_t errlen)
{
	imp_writer *w = calloc(1, sizeof(*w));

	if (w == NULL)
		return -1;
	if (o->secret == NULL || o->secret[0] == '\0') {
		snprintf(
		        err, errlen,
		        "no service secret (PARLEY_SERVICE_SECRET): the import "
		        "calls the services as a service");
		free(w);
		return -1;
	}
	pl_arena_init(&w->arena, 1 << 20, 0);
	pl_arena_init(&w->arena2, 1 << 20, 0);
	pthread_mutex_init(&w->mu, NULL);
	if (open_client(&w->tenants, o->tenants_url, o->secret, "tenants", err,
	                errlen) != 0 ||
	    open_client(&w->billing, o->billing_url, o->secret, "billing", err,
	                errlen) != 0 ||
	    open_client(&w->agents, o->agents_url, o->secret, "agents", err,
	                errlen) != 0 ||
	    open_client(&w->messaging, o->messaging_url, o->secret, "messaging",
	                err, errlen) != 0) {
		import_writer_close(w);
		return -1;
	}
	// The kill -9 test (tests/integration/test_import_kill.c) stops the
	// importer right after its n-th write call has been answered, to
	// resume from every point between two writes.
	{
		const char *ca =
		        getenv("PARLEY_IMPORT_TEST_CRASH_AFTER_WRITES");
		w->crash_after = ca != NULL ? strtol(ca, NULL, 10) : 0;
	}
	parley__rpc__v1__principal__init(&w->svc);
	w->svc.kind = PARLEY__RPC__V1__PRINCIPAL_KIND__PRINCIPAL_KIND_SERVICE;
	w->svc.service = "import";
	*out = w;
	return 0;
}

void
import_writer_counts(const imp_writer *w, long *calls, long *writes)
{
	*calls = w != NULL ? w->calls : 0; // no writer thread runs by now
	*writes = w != NULL ? w->writes : 0;
}

void
import_writer_close(imp_writer *w)
{
	if (w == NULL)
		return;
	if (w->tenants)
		pl_rpc_client_close(w->tenants);
	if (w->billing)
		pl_rpc_client_close(w->billing);
	if (w->agents)
		pl_rpc_client_close(w->agents);
	if (w->messaging)
		pl_rpc_client_close(w->messaging);
	pl_arena_fini(&w->arena);
	pl_arena_fini(&w->arena2);
	pthread_mutex_destroy(&w->mu);
	free(w);
}

// One call, its answer in arena a (calls from several threads each use
// their own); on failure err says which call and why.
static int
call_in(imp_writer *w, pl_arena *a, pl_rpc_client *c, const char *method,
        const ProtobufCMessage *in, const ProtobufCMessageDescriptor *od,
        void **out, bool idempotent, char *err, size_t errlen)
{
	pl_rpc_opts op = { 0 };
	pl_rpc_result res = { 0 };
	const char *m = strrchr(method, '/') + 1;
	bool crash = false;
	int rc;

	op.principal = &w->svc;
	op.idempotent = idempotent;
	rc = pl_rpc_call(c, method, in, od, out, a, &op, &res);
	pthread_mutex_lock(&w->mu);
	w->calls++;
	if (strncmp(m, "Get", 3) != 0 && strncmp(m, "List", 4) != 0) {
		w->writes++;
		crash = w->crash_after > 0 && w->writes == w->crash_after;
	}
	pthread_mutex_unlock(&w->mu);
	if (crash)
		raise(SIGKILL);
	if (rc != PL_OK && err != NULL)
		snprintf(err, errlen, "%s: %s: %s", strrchr(method, '/') + 1,
		         pl_status_name(rc), res.message ? res.message : "");
	return rc;
}

static int
call(imp_writer *w, pl_rpc_client *c, const char *method,
     const ProtobufCMessage *in, const ProtobufCMessageDescriptor *od,
     void **out, bool idempotent, char *err, size_t errlen)
{
	return call_in(w, &w->arena, c, method, in, od, out, idempotent, err,
	               errlen);
}

#define CALL(w, c, m, in, T, out, idem, err, errlen)                           \
	call(w, c, m, &(in)->base, &T##__descriptor, (void **)(out), idem,     \
	     err, errlen)

static int
find_tenant(imp_writer *w, const char *slug, char *err, size_t errlen)
{
	TN(ListTenantsRequest)
	in = PARLEY__TENANTS__V1__LIST_TENANTS_REQUEST__INIT;
	Parley__Rpc__V1__PageRequest pg = PARLEY__RPC__V1__PAGE_REQUEST__INIT;
	TN(ListTenantsResponse) *out = NULL;
	int rc;

	pg.page_size = 200;
	in.page = &pg;
	in.query = (char *)slug;
	rc = CALL(w, w->tenants, "/parley.tenants.v1.Tenants/ListTenants", &in,
	          parley__tenants__v1__list_tenants_response, &out, true, err,
	          errlen);
	if (rc != PL_OK)
		return rc;
	w->tenant_id[0] = '\0';
	for (size_t i = 0; i < out->n_tenants; i++)
		if (strcmp(out->tenants[i]->slug, slug) == 0)
			snprintf(w->tenant_id, sizeof(w->tenant_id), "%s",
			         out->tenants[i]->id);
	return PL_OK;
}

static int
ensure_plan(imp_writer *w, char *err, size_t errlen)
{
	// billing learns of a new tenant through tenants' outbox: wait for
	// the subscription a little.
	for (int i = 0; i < 300; i++) {
		BL(GetSubscriptionRequest)
		gi = PARLEY__BILLING__V1__GET_SUBSCRIPTION_REQUEST__INIT;
		BL(GetSubscriptionResponse) *go = NULL;
		BL(ChangePlanRequest)
		ci = PARLEY__BILLING__V1__CHANGE_PLAN_REQUEST__INIT;
		BL(ChangePlanResponse) *co = NULL;
		int rc = CALL(w, w->billing,
		              "/parley.billing.v1.Billing/GetSubscription", &gi,
		              parley__billing__v1__get_subscription_response,
		              &go, true, err, errlen);
		if (rc == PL_NOT_FOUND) {
			usleep(100000);
			continue;
		}
		if (rc != PL_OK)
			return rc;
		if (go->subscription &&
		    strcmp(go->subscription->plan_code, "unlimited") == 0)
			return PL_OK;
		ci.plan_code = "unlimited";
		return CALL(w, w->billing,
		            "/parley.billing.v1.Billing/ChangePlan", &ci,
		            parley__billing__v1__change_plan_response, &co,
		            false, err, errlen);
	}
	snprintf(err, errlen,
	         "billing has no subscription for the tenant after 30 s (is "
	         "tenants' outbox relay reaching billing?)");
	return PL_UNAVAILABLE;
}

static int
ensure_agent(imp_writer *w, char *err, size_t errlen)
{
	AG(ListAgentsRequest)
	li = PARLEY__AGENTS__V1__LIST_AGENTS_REQUEST__INIT;
	Parley__Rpc__V1__PageRequest pg = PARLEY__RPC__V1__PAGE_REQUEST__INIT;
	AG(ListAgentsResponse) *lo = NULL;
	int version = 0, rc;

	pg.page_size = 200;
	li.page = &pg;
	if ((rc = CALL(w, w->agents, "/parley.agents.v1.Agents/ListAgents", &li,
	               parley__agents__v1__list_agents_response, &lo, true, err,
	               errlen)) != PL_OK)
		return rc;
	w->agent_id[0] = '\0';
	for (size_t i = 0; i < lo->n_agents && !w->agent_id[0]; i++)
		if (strcmp(lo->agents[i]->name, BOT_NAME) == 0) {
			snprintf(w->agent_id, sizeof(w->agent_id), "%s",
			         lo->agents[i]->id);
			version = lo->agents[i]->version;
		}
	if (!w->agent_id[0]) {
		AG(CreateAgentRequest)
		ci = PARLEY__AGENTS__V1__CREATE_AGENT_REQUEST__INIT;
		AG(CreateAgentResponse) *co = NULL;
		ci.name = BOT_NAME;
		ci.description = "Made by the legacy import";
		ci.engine =
		        PARLEY__AGENTS__V1__AGENT_ENGINE__AGENT_ENGINE_RETRIEVAL;
		if ((rc = CALL(w, w->agents,
		               "/parley.agents.v1.Agents/CreateAgent", &ci,
		               parley__agents__v1__create_agent_response, &co,
		               false, err, errlen)) != PL_OK)
			return rc;
		snprintf(w->agent_id, sizeof(w->agent_id), "%s", co->id);
	}
	if (version == 0) {
		AG(PublishAgentRequest)
		pi = PARLEY__AGENTS__V1__PUBLISH_AGENT_REQUEST__INIT;
		AG(PublishAgentResponse) *po = NULL;
		pi.id = w->agent_id;
		pi.note = "legacy import";
		if ((rc = CALL(w, w->agents,
		               "/parley.agents.v1.Agents/PublishAgent", &pi,
		               parley__agents__v1__publish_agent_response, &po,
		               false, err, errlen)) != PL_OK)
			return rc;
	}
	return PL_OK;
}

#define PLACEHOLDER_PNID_LEN 30 // digits; real phone number ids are shorter

static bool
is_placeholder_pnid(const char *s)
{
	size_t n = 0;

	if (s == NULL)
		return false;
	for (; s[n]; n++)
		if (s[n] < '0' || s[n] > '9')
			return false;
	return n == PLACEHOLDER_PNID_LEN;
}

static int
disable_placeholder(imp_writer *w, char *err, size_t errlen)
{
	TN(DisableChannelRequest)
	di = PARLEY__TENANTS__V1__DISABLE_CHANNEL_REQUEST__INIT;
	TN(DisableChannelResponse) *dout = NULL;

	di.id = w->channel_id;
	di.reason = "legacy import: no WhatsApp credentials given";
	return CALL(w, w->tenants, "/parley.tenants.v1.Tenants/DisableChannel",
	            &di, parley__tenants__v1__disable_channel_response, &dout,
	            false, err, errlen);
}

static int
ensure_channel(imp_writer *w, const imp_opts *o, char *err, size_t errlen)
{
	TN(ListChannelsRequest)
	li = PARLEY__TENANTS__V1__LIST_CHANNELS_REQUEST__INIT;
	Parley__Rpc__V1__PageRequest pg = PARLEY__RPC__V1__PAGE_REQUEST__INIT;
	TN(ListChannelsResponse) *lo = NULL;
	TN(CreateChannelRequest)
	ci = PARLEY__TENANTS__V1__CREATE_CHANNEL_REQUEST__INIT;
	TN(CreateChannelResponse) *co = NULL;
	bool creds = o->wa_phone_number_id && o->wa_phone_number_id[0];
	char pnid[80], tok[65], sec[65];
	uint8_t rnd[32];
	int rc;

	pg.page_size = 200;
	li.page = &pg;
	li.type =
	        PARLEY__TENANTS__V1__CHANNEL_TYPE__CHANNEL_TYPE_WHATSAPP_CLOUD;
	if ((rc = CALL(w, w->tenants, "/parley.tenants.v1.Tenants/ListChannels",
	               &li, parley__tenants__v1__list_channels_response, &lo,
	               true, err, errlen)) != PL_OK)
		return rc;
	for (size_t i = 0; i < lo->n_channels; i++) {
		const TN(Channel) *ch = lo->channels[i];
		if (strcmp(ch->name, CHANNEL_NAME) != 0)
			continue;
		snprintf(w->channel_id, sizeof(w->channel_id), "%s", ch->id);
		// A placeholder (made below with no credentials) still active:
		// an earlier run stopped between CreateChannel and
		// DisableChannel. A channel the tenant has since given real
		// credentials has another phone number id and is left alone.
		if (!creds &&
		    ch->status ==
		            PARLEY__TENANTS__V1__CHANNEL_STATUS__CHANNEL_STATUS_ACTIVE &&
		    is_placeholder_pnid(ch->phone_number_id))
			return disable_placeholder(w, err, errlen);
		return PL_OK;
	}
	ci.type =
	        PARLEY__TENANTS__V1__CHANNEL_TYPE__CHANNEL_TYPE_WHATSAPP_CLOUD;
	ci.name = CHANNEL_NAME;
	ci.agent_id = w->agent_id;
	if (creds) {
		ci.phone_number_id = (char *)o->wa_phone_number_id;
		ci.access_token = (char *)o->wa_access_token;
		ci.app_secret = (char *)o->wa_app_secret;
		ci.verify_token = (char *)o->wa_verify_token;
		ci.api_base_url =
		        (char *)(o->wa_api_base_url ? o->wa_api_base_url : "");
		ci.display_phone_number =
		        (char *)(o->wa_display_phone ? o->wa_display_phone
		                                     : "");
	} else {
		// No credentials: a placeholder channel, disabled at once; the
		// tenant sets the real ones with UpdateChannel + EnableChannel.
		randombytes_buf(rnd, sizeof(rnd));
		sodium_bin2hex(tok, sizeof(tok), rnd, sizeof(rnd));
		// WhatsApp ids are digits, unique per type: 30 random ones.
		for (int i = 0; i < PLACEHOLDER_PNID_LEN; i++)
			pnid[i] = (char)('0' + randombytes_uniform(10));
		pnid[PLACEHOLDER_PNID_LEN] = '\0';
		randombytes_buf(rnd, sizeof(rnd));
		sodium_bin2hex(sec, sizeof(sec), rnd, sizeof(rnd));
		ci.phone_number_id = pnid;
		ci.access_token = tok;
		ci.app_secret = sec;
		ci.verify_token = sec;
	}
	if ((rc = CALL(w, w->tenants,
	               "/parley.tenants.v1.Tenants/CreateChannel", &ci,
	               parley__tenants__v1__create_channel_response, &co, false,
	               err, errlen)) != PL_OK)
		return rc;
	snprintf(w->channel_id, sizeof(w->channel_id), "%s", co->id);
	if (!creds)
		return disable_placeholder(w, err, errlen);
	return PL_OK;
}

int
import_setup(imp_writer *w, const imp_opts *o, imp_report *r, bool dry,
             bool *found, char *err, size_t errlen)
{
	int rc;

	pl_arena_reset(&w->arena);
	if ((rc = find_tenant(w, o->tenant_slug, err, errlen)) != PL_OK)
		return rc;
	*found = w->tenant_id[0] != '\0';
	if (!*found && dry)
		return PL_OK;
	if (!*found) {
		TN(SignUpRequest)
		in = PARLEY__TENANTS__V1__SIGN_UP_REQUEST__INIT;
		TN(SignUpResponse) *out = NULL;
		if (o->admin_email == NULL || o->admin_password == NULL ||
		    !o->admin_email[0] || !o->admin_password[0]) {
			snprintf(err, errlen,
			         "tenant \"%s\" does not exist: give its admin "
			         "with --admin-email and --admin-password (or "
			         "PARLEY_IMPORT_ADMIN_EMAIL / "
			         "PARLEY_IMPORT_ADMIN_PASSWORD)",
			         o->tenant_slug);
			return PL_INVALID_ARGUMENT;
		}
		in.tenant_name = (char *)(o->tenant_name ? o->tenant_name
		                                         : o->tenant_slug);
		in.tenant_slug = (char *)o->tenant_slug;
		in.email = (char *)o->admin_email;
		in.password = (char *)o->admin_password;
		in.full_name = (char *)(o->admin_name ? o->admin_name
		                                      : "Administrator");
		in.source_ip = "127.0.0.1";
		in.user_agent = "parley-import";
		if ((rc = CALL(w, w->tenants,
		               "/parley.tenants.v1.Tenants/SignUp", &in,
		               parley__tenants__v1__sign_up_response, &out,
		               false, err, errlen)) != PL_OK)
			return rc;
		snprintf(w->tenant_id, sizeof(w->tenant_id), "%s",
		         out->tenant->id);
		r->tenant_created = true;
	}
	w->svc.tenant_id = w->tenant_id;
	w->svc.role = PARLEY__RPC__V1__ROLE__ROLE_OWNER;
	snprintf(r->tenant_id, sizeof(r->tenant_id), "%s", w->tenant_id);
	if (dry)
		return PL_OK;
	if ((rc = ensure_plan(w, err, errlen)) != PL_OK ||
	    (rc = ensure_agent(w, err, errlen)) != PL_OK ||
	    (rc = ensure_channel(w, o, err, errlen)) != PL_OK)
		return rc;
	snprintf(r->agent_id, sizeof(r->agent_id), "%s", w->agent_id);
	snprintf(r->channel_id, sizeof(r->channel_id), "%s", w->channel_id);
	return PL_OK;
}

// ---------------------------------------------------------------------------
// Bulk

static char *
json_text(pl_arena *a, json_t *j)
{
	char *s = json_dumps(j, JSON_COMPACT), *out;

	json_decref(j);
	if (s == NULL)
		return NULL;
	out = pl_arena_strdup(a, s);
	free(s);
	return out;
}

static Parley__Rpc__V1__Json *
pjson(pl_arena *a, const char *text)
{
	Parley__Rpc__V1__Json *j;

	if (text == NULL)
		return NULL;
	j = pl_arena_zalloc(a, sizeof(*j));
	parley__rpc__v1__json__init(j);
	j->text = (char *)text;
	return j;
}

static const char *
contact_pid(const imp_source *src, int canon, const char *system_pid)
{
	return canon < 0 ? system_pid : src->contacts[canon].pid;
}

// The progress callback, one thread at a time.
static void
progress(imp_writer *w, imp_progress_fn prog, void *parg, int table,
         size_t done, size_t total)
{
	pthread_mutex_lock(&w->mu);
	prog(parg, table, done, total);
	pthread_mutex_unlock(&w->mu);
}

static int
write_contacts(imp_writer *w, const imp_opts *o, imp_source *src, imp_report *r,
               char *system_pid, imp_progress_fn prog, void *parg, char *err,
               size_t errlen)
{
	size_t total = src->n_contacts + (src->system_group >= 0 ? 1 : 0);
	size_t done = 0;
	imp_table *t = &r->t[IMP_T_CONTACTS];

	while (done < total) {
		MSG(ImportContactsRequest)
		in = PARLEY__MESSAGING__V1__IMPORT_CONTACTS_REQUEST__INIT;
		MSG(ImportContactsResponse) *out = NULL;
		size_t n = total - done < (size_t)o->batch ? total - done
		                                           : (size_t)o->batch;
		pl_arena *a = &w->arena;

		pl_arena_reset(a);
		in.tenant_id = w->tenant_id;
		in.channel_id = w->channel_id;
		in.contacts = pl_arena_zalloc(a, sizeof(void *) * n);
		for (size_t i = 0; i < n; i++) {
			MSG(ImportContact) *c = pl_arena_zalloc(a, sizeof(*c));
			size_t k = done + i;
			parley__messaging__v1__import_contact__init(c);
			if (k < src->n_contacts) {
				imp_contact *x = &src->contacts[k];
				json_t *cf = json_pack(
				        "{s:s}", "legacy_contact_id", x->id);
				if (x->thread_id)
					json_object_set_new(
					        cf, "legacy_thread_id",
					        json_string(x->thread_id));
				c->legacy_id = (char *)x->id;
				c->phone_raw =
				        (char *)(x->phone ? x->phone : "");
				if (!x->e164[0])
					c->external_id = pl_arena_printf(
					        a, "legacy:%s", x->id);
				c->name = (char *)(x->name ? x->name : "");
				c->custom_fields = pjson(a, json_text(a, cf));
				c->created_at =
				        (char *)(x->created_at ? x->created_at
				                               : "");
				c->updated_at =
				        (char *)(x->updated_at ? x->updated_at
				                               : "");
			} else {
				static char *tags[] = { "legacy-system" };
				c->legacy_id = IMP_SYSTEM_CONTACT;
				c->external_id = "legacy:" IMP_SYSTEM_CONTACT;
				c->name = "Legacy system messages";
				c->tags = tags;
				c->n_tags = 1;
			}
			in.contacts[in.n_contacts++] = c;
		}
		if (call(w, w->messaging,
		         "/parley.messaging.v1.Messaging/ImportContacts",
		         &in.base,
		         &parley__messaging__v1__import_contacts_response__descriptor,
		         (void **)&out, true, err, errlen) != PL_OK)
			return -1;
		if (out->n_ids != n) {
			snprintf(err, errlen,
			         "ImportContacts answered %zu ids for %zu "
			         "contacts",
			         out->n_ids, n);
			return -1;
		}
		for (size_t i = 0; i < n; i++) {
			size_t k = done + i;
			if (k < src->n_contacts)
				snprintf(src->contacts[k].pid, 40, "%s",
				         out->ids[i]->id);
			else
				snprintf(system_pid, 40, "%s", out->ids[i]->id);
			if (out->ids[i]->created)
				t->created++;
			else
				t->existing++;
		}
		done += n;
		if (prog)
			prog(parg, IMP_T_CONTACTS, done, total);
	}
	return 0;
}

static MSG(ImportMessage) *
        message_pb(pl_arena *a, const imp_message *m, size_t *bytes)
{
	MSG(ImportMessage) *x = pl_arena_zalloc(a, sizeof(*x));

	parley__messaging__v1__import_message__init(x);
	x->legacy_id = (char *)m->id;
	x->direction = m->dir;
	x->sender = m->sender;
	x->type = m->mtype;
	x->text = (char *)(m->text ? m->text : "");
	x->media_url = (char *)(m->url ? m->url : "");
	x->provider_message_id = (char *)(m->message_id ? m->message_id : "");
	x->status = m->mstatus;
	x->provider_created_at = (char *)(m->sent_at ? m->sent_at : "");
	x->created_at = (char *)(m->created_at ? m->created_at : "");
	x->metadata = pjson(a, m->metadata);
	*bytes = strlen(x->text) + strlen(x->media_url) +
	         (m->metadata ? strlen(m->metadata) : 0) + 200;
	return x;
}

static MSG(ImportConversation) *
        conversation_pb(pl_arena *a, const imp_writer *w, const imp_source *src,
                        const char *system_pid, const imp_group *gr)
{
	MSG(ImportConversation) *c = pl_arena_zalloc(a, sizeof(*c));

	parley__messaging__v1__import_conversation__init(c);
	c->legacy_id = (char *)gr->legacy;
	c->contact_id = (char *)contact_pid(src, gr->contact, system_pid);
	c->agent_id = (char *)w->agent_id;
	c->status = gr->status;
	c->owner =
	        PARLEY__MESSAGING__V1__CONVERSATION_OWNER__CONVERSATION_OWNER_BOT;
	if (gr->n_msgs > 0) {
		const imp_message *m0 = &src->messages[gr->msgs[0]];
		c->created_at = (char *)(m0->sent_at ? m0->sent_at : "");
	} else if (gr->contact >= 0 && src->contacts[gr->contact].created_at) {
		c->created_at = (char *)src->contacts[gr->contact].created_at;
	}
	if (gr->status == 3)
		c->closed_at = (char *)gr->last_at;
	return c;
}

// Conversations first, without their messages (at most `batch` a call):
// then every message batch finds its conversations made, and two batches
// can be written at once.
static int
write_conversation_rows(imp_writer *w, const imp_opts *o, imp_source *src,
                        imp_report *r, const char *system_pid, char *err,
                        size_t errlen)
{
	imp_table *tc = &r->t[IMP_T_CONVERSATIONS];
	size_t g = 0;

	while (g < src->n_groups) {
		MSG(ImportConversationsRequest)
		in = PARLEY__MESSAGING__V1__IMPORT_CONVERSATIONS_REQUEST__INIT;
		MSG(ImportConversationsResponse) *out = NULL;
		pl_arena *a = &w->arena;
		size_t n = src->n_groups - g < (size_t)o->batch
		                   ? src->n_groups - g
		                   : (size_t)o->batch;

		pl_arena_reset(a);
		in.tenant_id = w->tenant_id;
		in.channel_id = w->channel_id;
		in.conversations = pl_arena_zalloc(a, sizeof(void *) * (n + 1));
		for (size_t i = 0; i < n; i++)
			in.conversations[in.n_conversations++] =
			        conversation_pb(a, w, src, system_pid,
			                        &src->groups[g + i]);
		if (call(w, w->messaging,
		         "/parley.messaging.v1.Messaging/ImportConversations",
		         &in.base,
		         &parley__messaging__v1__import_conversations_response__descriptor,
		         (void **)&out, true, err, errlen) != PL_OK)
			return -1;
		if (out->n_conversations != n) {
			snprintf(err, errlen,
			         "ImportConversations answered %zu ids for %zu "
			         "conversations",
			         out->n_conversations, n);
			return -1;
		}
		for (size_t i = 0; i < n; i++) {
			snprintf(src->groups[g + i].pid, 40, "%s",
			         out->conversations[i]->id);
			if (out->conversations[i]->created)
				tc->created++;
			else
				tc->existing++;
		}
		g += n;
	}
	return 0;
}

// A message batch: messages [m0, m1) of the groups' concatenated lists.
typedef struct msg_span {
	size_t g, k; // first group, offset in it
	size_t n;    // messages
} msg_span;

typedef struct msg_jobs {
	imp_writer *w;
	const imp_opts *o;
	imp_source *src;
	imp_report *r;
	const char *system_pid;
	imp_progress_fn prog;
	void *parg;
	msg_span *spans;
	size_t n_spans, next, done;
	bool failed;
	char err[1024];
} msg_jobs;

#define MAX_CONVS_PER_CALL 64

// Cuts the messages into batches of at most `batch` messages, MAX_BYTES
// and MAX_CONVS_PER_CALL conversations each.
static int
plan_spans(msg_jobs *j)
{
	const imp_source *src = j->src;
	size_t g = 0, k = 0, cap = 0;

	while (g < src->n_groups) {
		size_t n = 0, bytes = 0, convs = 0;
		msg_span sp = { g, k, 0 };
		while (g < src->n_groups && n < (size_t)j->o->batch &&
		       bytes < MAX_BYTES && convs < MAX_CONVS_PER_CALL) {
			const imp_group *gr = &src->groups[g];
			while (k < gr->n_msgs && n < (size_t)j->o->batch &&
			       bytes < MAX_BYTES) {
				const imp_message *m =
				        &src->messages[gr->msgs[k]];
				bytes += (m->text ? strlen(m->text) : 0) +
				         (m->url ? strlen(m->url) : 0) +
				         (m->metadata ? strlen(m->metadata)
				                      : 0) +
				         200;
				n++;
				k++;
			}
			convs++;
			if (k >= gr->n_msgs) {
				g++;
				k = 0;
			}
		}
		sp.n = n;
		if (n == 0)
			continue; // groups without messages: made already
		if (j->n_spans == cap) {
			msg_span *v;
			cap = cap ? cap * 2 : 64;
			v = realloc(j->spans, sizeof(*v) * cap);
			if (v == NULL)
				return -1;
			j->spans = v;
		}
		j->spans[j->n_spans++] = sp;
	}
	return 0;
}

static int
send_span(msg_jobs *j, pl_arena *a, const msg_span *sp, char *err,
          size_t errlen)
{
	imp_writer *w = j->w;
	imp_source *src = j->src;
	MSG(ImportConversationsRequest)
	in = PARLEY__MESSAGING__V1__IMPORT_CONVERSATIONS_REQUEST__INIT;
	MSG(ImportConversationsResponse) *out = NULL;
	size_t *ix = pl_arena_zalloc(a, sizeof(size_t) * (sp->n + 1));
	size_t g = sp->g, k = sp->k, n = 0;
	imp_table *tm = &j->r->t[IMP_T_MESSAGES];
	int64_t created = 0, existing = 0;

	in.tenant_id = w->tenant_id;
	in.channel_id = w->channel_id;
	in.conversations =
	        pl_arena_zalloc(a, sizeof(void *) * (MAX_CONVS_PER_CALL + 1));
	if (ix == NULL || in.conversations == NULL) {
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	while (n < sp->n) {
		const imp_group *gr = &src->groups[g];
		size_t take =
		        gr->n_msgs - k < sp->n - n ? gr->n_msgs - k : sp->n - n;
		MSG(ImportConversation) *c =
		        conversation_pb(a, w, src, j->system_pid, gr);
		c->messages = pl_arena_zalloc(a, sizeof(void *) * (take + 1));
		for (size_t i = 0; i < take; i++) {
			size_t b, mi = gr->msgs[k + i];
			c->messages[c->n_messages++] =
			        message_pb(a, &src->messages[mi], &b);
			ix[n++] = mi;
		}
		in.conversations[in.n_conversations++] = c;
		k += take;
		if (k >= gr->n_msgs) {
			g++;
			k = 0;
		}
	}
	if (call_in(w, a, w->messaging,
	            "/parley.messaging.v1.Messaging/ImportConversations",
	            &in.base,
	            &parley__messaging__v1__import_conversations_response__descriptor,
	            (void **)&out, true, err, errlen) != PL_OK)
		return -1;
	if (out->n_messages != n) {
		snprintf(err, errlen,
		         "ImportConversations answered %zu message ids for %zu "
		         "messages",
		         out->n_messages, n);
		return -1;
	}
	// The ids come back in request order; each batch owns its messages.
	for (size_t i = 0; i < n; i++) {
		const MSG(ImportedId) *x = out->messages[i];
		snprintf(src->messages[ix[i]].pid, 40, "%s", x->id);
		if (x->created)
			created++;
		else
			existing++;
	}
	pthread_mutex_lock(&w->mu);
	tm->created += created;
	tm->existing += existing;
	j->done += n;
	if (j->prog)
		j->prog(j->parg, IMP_T_MESSAGES, j->done, src->n_messages);
	pthread_mutex_unlock(&w->mu);
	return 0;
}

static void *
msg_worker(void *arg)
{
	msg_jobs *j = arg;
	pl_arena a;
	char err[1024];

	pl_arena_init(&a, 1 << 20, 0);
	for (;;) {
		size_t i;
		pthread_mutex_lock(&j->w->mu);
		i = j->next++;
		if (j->failed || i >= j->n_spans) {
			pthread_mutex_unlock(&j->w->mu);
			break;
		}
		pthread_mutex_unlock(&j->w->mu);
		pl_arena_reset(&a);
		err[0] = '\0';
		if (send_span(j, &a, &j->spans[i], err, sizeof(err)) != 0) {
			pthread_mutex_lock(&j->w->mu);
			if (!j->failed)
				snprintf(j->err, sizeof(j->err), "%s", err);
			j->failed = true;
			pthread_mutex_unlock(&j->w->mu);
			break;
		}
	}
	pl_arena_fini(&a);
	return NULL;
}

#define MSG_WRITERS 2 // batches in flight at once

static int
write_conversations(imp_writer *w, const imp_opts *o, imp_source *src,
                    imp_report *r, const char *system_pid, imp_progress_fn prog,
                    void *parg, char *err, size_t errlen)
{
	msg_jobs j = { 0 };
	pthread_t th[MSG_WRITERS];
	int started = 0;

	if (write_conversation_rows(w, o, src, r, system_pid, err, errlen) != 0)
		return -1;
	j.w = w;
	j.o = o;
	j.src = src;
	j.r = r;
	j.system_pid = system_pid;
	j.prog = prog;
	j.parg = parg;
	if (plan_spans(&j) != 0) {
		free(j.spans);
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	// Two batches in flight: the service's JSON and protobuf work and
	// this process's overlap PostgreSQL's, and PostgreSQL uses two
	// cores. Batches share at most one conversation (cut in order), so
	// their counter updates cannot deadlock.
	for (int i = 0; i < MSG_WRITERS; i++)
		if (pthread_create(&th[i], NULL, msg_worker, &j) == 0)
			started++;
	if (started == 0)
		msg_worker(&j);
	for (int i = 0; i < started; i++)
		pthread_join(th[i], NULL);
	free(j.spans);
	if (j.failed) {
		snprintf(err, errlen, "%s", j.err);
		return -1;
	}
	return 0;
}

static int
write_orders(imp_writer *w, const imp_opts *o, imp_source *src, imp_report *r,
             const char *system_pid, imp_progress_fn prog, void *parg,
             char *err, size_t errlen)
{
	size_t done = 0;
	imp_table *t = &r->t[IMP_T_ORDERS];

	while (done < src->n_orders) {
		MSG(ImportOrdersRequest)
		in = PARLEY__MESSAGING__V1__IMPORT_ORDERS_REQUEST__INIT;
		MSG(ImportOrdersResponse) *out = NULL;
		size_t n = src->n_orders - done < (size_t)o->batch
		                   ? src->n_orders - done
		                   : (size_t)o->batch;
		pl_arena *a = &w->arena;

		pl_arena_reset(a);
		in.tenant_id = w->tenant_id;
		in.orders = pl_arena_zalloc(a, sizeof(void *) * n);
		for (size_t i = 0; i < n; i++) {
			imp_order *x = &src->orders[done + i];
			MSG(ImportOrder) *y = pl_arena_zalloc(a, sizeof(*y));
			int g = x->contact >= 0
			                ? src->contacts[x->contact].group
			                : src->system_group;
			parley__messaging__v1__import_order__init(y);
			y->legacy_id = (char *)x->id;
			y->contact_id = (char *)contact_pid(src, x->contact,
			                                    system_pid);
			y->conversation_id = g >= 0 ? src->groups[g].pid : "";
			y->message_id = x->message >= 0
			                        ? src->messages[x->message].pid
			                        : "";
			y->status = x->ostatus;
			y->currency = x->currency;
			y->items = pl_arena_zalloc(a, sizeof(void *) *
			                                      (x->n_items + 1));
			for (size_t k = 0; k < x->n_items; k++) {
				MSG(OrderItem) *it =
				        pl_arena_zalloc(a, sizeof(*it));
				parley__messaging__v1__order_item__init(it);
				it->sku = x->items[k].sku;
				it->name = x->items[k].name;
				it->quantity = x->items[k].qty;
				it->unit_price_minor = x->items[k].unit_minor;
				y->items[y->n_items++] = it;
			}
			y->address = pjson(a, x->address);
			y->legacy_details = pjson(a, x->details);
			y->created_at =
			        (char *)(x->created_at ? x->created_at : "");
			y->updated_at =
			        (char *)(x->updated_at ? x->updated_at : "");
			in.orders[in.n_orders++] = y;
		}
		if (call(w, w->messaging,
		         "/parley.messaging.v1.Messaging/ImportOrders",
		         &in.base,
		         &parley__messaging__v1__import_orders_response__descriptor,
		         (void **)&out, true, err, errlen) != PL_OK)
			return -1;
		for (size_t i = 0; i < out->n_ids && i < n; i++) {
			snprintf(src->orders[done + i].pid, 40, "%s",
			         out->ids[i]->id);
			if (out->ids[i]->created)
				t->created++;
			else
				t->existing++;
		}
		done += n;
		if (prog)
			progress(w, prog, parg, IMP_T_ORDERS, done,
			         src->n_orders);
	}
	return 0;
}

static int
write_campaigns(imp_writer *w, const imp_opts *o, imp_source *src,
                imp_report *r, imp_progress_fn prog, void *parg, char *err,
                size_t errlen)
{
	imp_table *tc = &r->t[IMP_T_CAMPAIGNS], *tr = &r->t[IMP_T_RECIPIENTS];
	size_t s = 0; // subscribers are ordered by id; pick per campaign

	for (size_t ci = 0; ci < src->n_campaigns; ci++) {
		imp_campaign *c = &src->campaigns[ci];
		size_t *mine = NULL, n_mine = 0, off = 0;

		for (s = 0; s < src->n_subs; s++)
			if (src->subs[s].campaign == (int)ci) {
				size_t *v = realloc(mine,
				                    sizeof(*v) * (n_mine + 1));
				if (v == NULL) {
					free(mine);
					snprintf(err, errlen, "out of memory");
					return -1;
				}
				mine = v;
				mine[n_mine++] = s;
			}
		do {
			MSG(ImportCampaignsRequest)
			in = PARLEY__MESSAGING__V1__IMPORT_CAMPAIGNS_REQUEST__INIT;
			MSG(ImportCampaignsResponse) *out = NULL;
			MSG(ImportCampaign) * y;
			pl_arena *a = &w->arena2;
			size_t n = n_mine - off < (size_t)o->batch
			                   ? n_mine - off
			                   : (size_t)o->batch;
			json_t *comp;

			pl_arena_reset(a);
			y = pl_arena_zalloc(a, sizeof(*y));
			parley__messaging__v1__import_campaign__init(y);
			in.tenant_id = w->tenant_id;
			in.channel_id = w->channel_id;
			in.campaigns = pl_arena_zalloc(a, sizeof(void *));
			in.campaigns[in.n_campaigns++] = y;
			y->legacy_id = (char *)c->id;
			y->name = (char *)c->name;
			y->status = c->cstatus;
			y->template_name = c->tname;
			y->template_language =
			        (char *)(o->template_language
			                         ? o->template_language
			                         : "en");
			y->template_category =
			        PARLEY__MESSAGING__V1__TEMPLATE_CATEGORY__TEMPLATE_CATEGORY_MARKETING;
			comp = json_pack("[{s:s, s:s}]", "type", "BODY", "text",
			                 c->body);
			y->template_components = pjson(a, json_text(a, comp));
			y->parameters = pl_arena_zalloc(
			        a, sizeof(void *) * ((size_t)c->n_params + 1));
			for (int p = 0; p < c->n_params; p++) {
				MSG(ParameterBinding) *b =
				        pl_arena_zalloc(a, sizeof(*b));
				parley__messaging__v1__parameter_binding__init(
				        b);
				b->index = p + 1;
				b->name = c->params[p].field;
				b->contact_field = c->params[p].field;
				b->fallback =
				        strcmp(c->params[p].field, "name") == 0
				                ? "Customer"
				                : "";
				y->parameters[y->n_parameters++] = b;
			}
			y->created_at =
			        (char *)(c->created_at ? c->created_at : "");
			y->recipients =
			        pl_arena_zalloc(a, sizeof(void *) * (n + 1));
			for (size_t i = 0; i < n; i++) {
				imp_sub *x = &src->subs[mine[off + i]];
				MSG(ImportRecipient) *rr =
				        pl_arena_zalloc(a, sizeof(*rr));
				parley__messaging__v1__import_recipient__init(
				        rr);
				rr->legacy_id = (char *)x->id;
				rr->contact_id = src->contacts[x->contact].pid;
				rr->status = x->rstatus;
				if (x->rstatus == 6)
					rr->opted_out_at =
					        (char *)(x->subscribed_at
					                         ? x->subscribed_at
					                         : "");
				else
					rr->opted_in_at =
					        (char *)(x->subscribed_at
					                         ? x->subscribed_at
					                         : "");
				y->recipients[y->n_recipients++] = rr;
			}
			if (call_in(w, a, w->messaging,
			            "/parley.messaging.v1.Messaging/"
			            "ImportCampaigns",
			            &in.base,
			            &parley__messaging__v1__import_campaigns_response__descriptor,
			            (void **)&out, true, err,
			            errlen) != PL_OK) {
				free(mine);
				return -1;
			}
			if (off == 0 && out->n_campaigns == 1) {
				snprintf(c->pid, 40, "%s",
				         out->campaigns[0]->id);
				if (out->campaigns[0]->created)
					tc->created++;
				else
					tc->existing++;
			}
			for (size_t i = 0; i < out->n_recipients; i++) {
				if (out->recipients[i]->created)
					tr->created++;
				else
					tr->existing++;
			}
			off += n;
		} while (off < n_mine);
		free(mine);
		if (prog)
			progress(w, prog, parg, IMP_T_CAMPAIGNS, ci + 1,
			         src->n_campaigns);
	}
	return 0;
}

static const char *
thread_for(const imp_source *src, int group, const char *legacy)
{
	return group >= 0 ? src->groups[group].pid : legacy;
}

static int
write_checkpoints(imp_writer *w, const imp_opts *o, imp_source *src,
                  imp_report *r, imp_progress_fn prog, void *parg, char *err,
                  size_t errlen)
{
	size_t total = src->n_ckpts + src->n_blobs + src->n_writes, done = 0;
	size_t ic = 0, ib = 0, iw = 0;

	for (size_t i = 0; i < src->n_ckpts; i++)
		src->ckpts[i].mapped_thread = thread_for(
		        src, src->ckpts[i].group, src->ckpts[i].thread_id);
	for (size_t i = 0; i < src->n_blobs; i++)
		src->blobs[i].mapped_thread = thread_for(
		        src, src->blobs[i].group, src->blobs[i].thread_id);
	for (size_t i = 0; i < src->n_writes; i++)
		src->writes[i].mapped_thread = thread_for(
		        src, src->writes[i].group, src->writes[i].thread_id);
	while (done < total) {
		AG(ImportCheckpointsRequest)
		in = PARLEY__AGENTS__V1__IMPORT_CHECKPOINTS_REQUEST__INIT;
		AG(ImportCheckpointsResponse) *out = NULL;
		pl_arena *a = &w->arena2;
		size_t n = 0, bytes = 0, lim = (size_t)o->batch;

		pl_arena_reset(a);
		in.tenant_id = w->tenant_id;
		in.agent_id = w->agent_id;
		in.checkpoints = pl_arena_zalloc(a, sizeof(void *) * (lim + 1));
		in.blobs = pl_arena_zalloc(a, sizeof(void *) * (lim + 1));
		in.writes = pl_arena_zalloc(a, sizeof(void *) * (lim + 1));
		for (; ic < src->n_ckpts && n < lim && bytes < MAX_BYTES;
		     ic++, n++) {
			const imp_ckpt *x = &src->ckpts[ic];
			AG(Checkpoint) *y = pl_arena_zalloc(a, sizeof(*y));
			parley__agents__v1__checkpoint__init(y);
			y->thread_id = (char *)x->mapped_thread;
			y->checkpoint_ns = (char *)(x->ns ? x->ns : "");
			y->checkpoint_id = (char *)x->id;
			y->parent_checkpoint_id =
			        (char *)(x->parent ? x->parent : "");
			y->type = (char *)(x->type ? x->type : "");
			y->state = pjson(a, x->state);
			y->metadata =
			        pjson(a, x->metadata ? x->metadata : "{}");
			y->legacy_thread_id = (char *)x->thread_id;
			in.checkpoints[in.n_checkpoints++] = y;
			bytes += strlen(x->state) + 200;
		}
		for (; ib < src->n_blobs && n < lim && bytes < MAX_BYTES;
		     ib++, n++) {
			const imp_blob *x = &src->blobs[ib];
			AG(CheckpointBlob) *y = pl_arena_zalloc(a, sizeof(*y));
			parley__agents__v1__checkpoint_blob__init(y);
			y->thread_id = (char *)x->mapped_thread;
			y->checkpoint_ns = (char *)(x->ns ? x->ns : "");
			y->channel = (char *)x->channel;
			y->version = (char *)x->version;
			// agents keeps a NULL blob as type "empty"
			y->type = (char *)(x->is_null ? "empty" : x->type);
			y->data.data = x->data;
			y->data.len = x->len;
			in.blobs[in.n_blobs++] = y;
			bytes += x->len * 2 + 200;
		}
		for (; iw < src->n_writes && n < lim && bytes < MAX_BYTES;
		     iw++, n++) {
			const imp_write *x = &src->writes[iw];
			AG(CheckpointWrite) *y = pl_arena_zalloc(a, sizeof(*y));
			parley__agents__v1__checkpoint_write__init(y);
			y->thread_id = (char *)x->mapped_thread;
			y->checkpoint_ns = (char *)(x->ns ? x->ns : "");
			y->checkpoint_id = (char *)x->ckpt_id;
			y->task_id = (char *)x->task_id;
			y->idx = (int32_t)strtol(x->idx, NULL, 10);
			y->channel = (char *)x->channel;
			y->type = (char *)(x->type ? x->type : "");
			y->data.data = x->data;
			y->data.len = x->len;
			y->task_path =
			        (char *)(x->task_path ? x->task_path : "");
			in.writes[in.n_writes++] = y;
			bytes += x->len * 2 + 200;
		}
		if (call_in(w, a, w->agents,
		            "/parley.agents.v1.Agents/ImportCheckpoints",
		            &in.base,
		            &parley__agents__v1__import_checkpoints_response__descriptor,
		            (void **)&out, true, err, errlen) != PL_OK)
			return -1;
		r->t[IMP_T_CHECKPOINTS].created += out->checkpoints_created;
		r->t[IMP_T_CHECKPOINTS].existing +=
		        (int64_t)in.n_checkpoints - out->checkpoints_created;
		r->t[IMP_T_BLOBS].created += out->blobs_created;
		r->t[IMP_T_BLOBS].existing +=
		        (int64_t)in.n_blobs - out->blobs_created;
		r->t[IMP_T_WRITES].created += out->writes_created;
		r->t[IMP_T_WRITES].existing +=
		        (int64_t)in.n_writes - out->writes_created;
		done += n;
		if (prog)
			progress(w, prog, parg, IMP_T_CHECKPOINTS, done, total);
	}
	return 0;
}

static double
now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

typedef struct side_job {
	imp_writer *w;
	const imp_opts *o;
	imp_source *src;
	imp_report *r;
	imp_progress_fn prog;
	void *parg;
	int rc;
	char err[1024];
} side_job;

// Campaigns (with their recipients), then checkpoints: they need contacts
// and conversations only, so they are written beside the orders.
static void *
side_writer(void *arg)
{
	side_job *j = arg;
	double t0 = now_s(), t1;

	j->rc = write_campaigns(j->w, j->o, j->src, j->r, j->prog, j->parg,
	                        j->err, sizeof(j->err));
	t1 = now_s();
	j->r->t[IMP_T_CAMPAIGNS].seconds = t1 - t0;
	j->r->t[IMP_T_RECIPIENTS].seconds = t1 - t0;
	if (j->rc != 0)
		return NULL;
	j->rc = write_checkpoints(j->w, j->o, j->src, j->r, j->prog, j->parg,
	                          j->err, sizeof(j->err));
	t0 = now_s();
	j->r->t[IMP_T_CHECKPOINTS].seconds = t0 - t1;
	j->r->t[IMP_T_BLOBS].seconds = t0 - t1;
	j->r->t[IMP_T_WRITES].seconds = t0 - t1;
	return NULL;
}

int
import_write_all(imp_writer *w, const imp_opts *o, imp_source *src,
                 imp_report *r, imp_progress_fn prog, void *parg, char *err,
                 size_t errlen)
{
	char system_pid[40] = "";
	double t0 = now_s(), t1;
	side_job side = { w, o, src, r, prog, parg, 0, "" };
	pthread_t th;
	bool threaded;
	int rc;

	if (write_contacts(w, o, src, r, system_pid, prog, parg, err, errlen))
		return -1;
	t1 = now_s();
	r->t[IMP_T_CONTACTS].seconds = t1 - t0;
	if (write_conversations(w, o, src, r, system_pid, prog, parg, err,
	                        errlen))
		return -1;
	t0 = now_s();
	r->t[IMP_T_MESSAGES].seconds = t0 - t1;
	r->t[IMP_T_CONVERSATIONS].seconds = t0 - t1;
	threaded = pthread_create(&th, NULL, side_writer, &side) == 0;
	rc = write_orders(w, o, src, r, system_pid, prog, parg, err, errlen);
	r->t[IMP_T_ORDERS].seconds = now_s() - t0;
	if (threaded)
		pthread_join(th, NULL);
	else if (rc == 0)
		side_writer(&side);
	if (rc != 0)
		return -1;
	if (side.rc != 0) {
		snprintf(err, errlen, "%s", side.err);
		return -1;
	}
	return 0;
}

static int
table_index(const char *name)
{
	static const char *const names[IMP_TABLES] = {
		"contacts",    "conversations",    "messages",
		"orders",      "campaigns",        "campaign_recipients",
		"checkpoints", "checkpoint_blobs", "checkpoint_writes",
	};
	for (int i = 0; i < IMP_TABLES; i++)
		if (strcmp(names[i], name) == 0)
			return i;
	return -1;
}

static void
put_status(imp_report *r, const char *table, const char *status, int64_t n)
{
	for (int i = 0; i < r->n_st; i++)
		if (strcmp(r->st[i].table, table) == 0 &&
		    strcmp(r->st[i].status, status) == 0) {
			r->st[i].parley = n;
			return;
		}
	if (r->n_st < 64) {
		int i = r->n_st++;
		int ti = table_index(table);
		r->st[i].table = ti >= 0 ? r->t[ti].name : "?";
		snprintf(r->st[i].status, sizeof(r->st[i].status), "%s",
		         status);
		r->st[i].source = 0;
		r->st[i].parley = n;
	}
}

int
import_fetch_summary(imp_writer *w, imp_report *r, char *err, size_t errlen)
{
	MSG(GetImportSummaryRequest)
	mi = PARLEY__MESSAGING__V1__GET_IMPORT_SUMMARY_REQUEST__INIT;
	MSG(GetImportSummaryResponse) *mo = NULL;
	AG(GetImportSummaryRequest)
	ai = PARLEY__AGENTS__V1__GET_IMPORT_SUMMARY_REQUEST__INIT;
	AG(GetImportSummaryResponse) *ao = NULL;

	pl_arena_reset(&w->arena);
	for (int i = 0; i < IMP_TABLES; i++) {
		r->t[i].parley = 0;
		r->t[i].sha_parley[0] = '\0';
	}
	for (int i = 0; i < r->n_st; i++)
		r->st[i].parley = 0;
	mi.tenant_id = w->tenant_id;
	if (CALL(w, w->messaging,
	         "/parley.messaging.v1.Messaging/GetImportSummary", &mi,
	         parley__messaging__v1__get_import_summary_response, &mo, true,
	         err, errlen) != PL_OK)
		return -1;
	for (size_t i = 0; i < mo->n_counts; i++) {
		int t = table_index(mo->counts[i]->table);
		if (t < 0)
			continue;
		if (mo->counts[i]->status[0] == '\0')
			r->t[t].parley = mo->counts[i]->count;
		else
			put_status(r, mo->counts[i]->table,
			           mo->counts[i]->status, mo->counts[i]->count);
	}
	for (size_t i = 0; i < mo->n_checksums; i++) {
		int t = table_index(mo->checksums[i]->table);
		if (t >= 0)
			snprintf(r->t[t].sha_parley, 65, "%s",
			         mo->checksums[i]->sha256);
	}
	ai.tenant_id = w->tenant_id;
	if (CALL(w, w->agents, "/parley.agents.v1.Agents/GetImportSummary", &ai,
	         parley__agents__v1__get_import_summary_response, &ao, true,
	         err, errlen) != PL_OK)
		return -1;
	for (size_t i = 0; i < ao->n_counts; i++) {
		int t = table_index(ao->counts[i]->table);
		if (t >= 0 && ao->counts[i]->status[0] == '\0')
			r->t[t].parley = ao->counts[i]->count;
	}
	for (size_t i = 0; i < ao->n_checksums; i++) {
		int t = table_index(ao->checksums[i]->table);
		if (t >= 0)
			snprintf(r->t[t].sha_parley, 65, "%s",
			         ao->checksums[i]->sha256);
	}
	return 0;
}

#define ROWS_PAGE 2000 // rows per GetImportSummary page (the service caps 5000)

static int
add_digest(imp_digest **v, size_t *n, size_t *cap, const char *key,
           const char *sha)
{
	if (*n == *cap) {
		size_t c = *cap ? *cap * 2 : 1024;
		imp_digest *x = realloc(*v, c * sizeof(*x));
		if (x == NULL)
			return -1;
		*v = x;
		*cap = c;
	}
	(*v)[*n].key = strdup(key);
	(*v)[*n].sha256 = strdup(sha);
	if ((*v)[*n].key == NULL || (*v)[*n].sha256 == NULL) {
		free((*v)[*n].key);
		free((*v)[*n].sha256);
		return -1;
	}
	(*n)++;
	return 0;
}

// One page of a table's rows: messaging's or agents' GetImportSummary,
// the rows added to v, *next the cursor ("" after the last page).
static int
rows_page(imp_writer *w, int table, const char *after, imp_digest **v,
          size_t *n, size_t *cap, char *next, size_t nextlen, char *err,
          size_t errlen)
{
	static const char *const names[IMP_TABLES] = {
		"contacts",    "conversations",    "messages",
		"orders",      "campaigns",        "campaign_recipients",
		"checkpoints", "checkpoint_blobs", "checkpoint_writes",
	};
	int rc = 0;

	pl_arena_reset(&w->arena);
	if (table < IMP_T_CHECKPOINTS) {
		MSG(GetImportSummaryRequest)
		in = PARLEY__MESSAGING__V1__GET_IMPORT_SUMMARY_REQUEST__INIT;
		MSG(GetImportSummaryResponse) *out = NULL;

		in.tenant_id = w->tenant_id;
		in.rows_of_table = (char *)names[table];
		in.rows_after = (char *)after;
		in.rows_limit = ROWS_PAGE;
		if (CALL(w, w->messaging,
		         "/parley.messaging.v1.Messaging/GetImportSummary", &in,
		         parley__messaging__v1__get_import_summary_response,
		         &out, true, err, errlen) != PL_OK)
			return -1;
		for (size_t i = 0; i < out->n_rows && rc == 0; i++)
			rc = add_digest(v, n, cap, out->rows[i]->key,
			                out->rows[i]->sha256);
		snprintf(next, nextlen, "%s", out->rows_next);
	} else {
		AG(GetImportSummaryRequest)
		in = PARLEY__AGENTS__V1__GET_IMPORT_SUMMARY_REQUEST__INIT;
		AG(GetImportSummaryResponse) *out = NULL;

		in.tenant_id = w->tenant_id;
		in.rows_of_table = (char *)names[table];
		in.rows_after = (char *)after;
		in.rows_limit = ROWS_PAGE;
		if (CALL(w, w->agents,
		         "/parley.agents.v1.Agents/GetImportSummary", &in,
		         parley__agents__v1__get_import_summary_response, &out,
		         true, err, errlen) != PL_OK)
			return -1;
		for (size_t i = 0; i < out->n_rows && rc == 0; i++)
			rc = add_digest(v, n, cap, out->rows[i]->key,
			                out->rows[i]->sha256);
		snprintf(next, nextlen, "%s", out->rows_next);
	}
	if (rc != 0)
		snprintf(err, errlen, "out of memory listing %s rows",
		         names[table]);
	return rc;
}

int
import_fetch_rows(imp_writer *w, const imp_report *r, int table,
                  imp_digest **out, size_t *n, char *err, size_t errlen)
{
	// A key is at most a few hundred bytes (services cap their keys).
	char after[4096] = "", next[4096];
	imp_digest *v = NULL;
	size_t cap = 0;

	*out = NULL;
	*n = 0;
	for (;;) {
		size_t before = *n;
		if (rows_page(w, table, after, &v, n, &cap, next, sizeof(next),
		              err, errlen) != 0) {
			import_digests_free(v, *n);
			*n = 0;
			return -1;
		}
		if (next[0] == '\0')
			break;
		// A cursor that does not move would loop for ever.
		if (*n == before || strcmp(next, after) <= 0) {
			snprintf(err, errlen,
			         "GetImportSummary: the rows of %s did not "
			         "advance past \"%s\"",
			         r->t[table].name, after);
			import_digests_free(v, *n);
			*n = 0;
			return -1;
		}
		memcpy(after, next, sizeof(after));
	}
	// A service from before the row listing ignores rows_of_table and
	// answers the summary: no rows for a table that has some.
	if (*n == 0 && r->t[table].parley > 0) {
		import_digests_free(v, 0);
		return 1;
	}
	*out = v;
	return 0;
}

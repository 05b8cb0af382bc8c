#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "echo_service.h"

static int
echo(pl_call *call, const void *inp, void *outp)
{
	const Parley__Test__V1__EchoRequest *in = inp;
	Parley__Test__V1__EchoReply *out = outp;

	out->data = in->data;
	out->text = in->text;
	out->tenant_id = (char *)call->principal->tenant_id;
	out->idempotency_key =
	        (char *)(call->idempotency_key ? call->idempotency_key : "");
	out->remaining_ms = pl_call_remaining_ms(call);
	return PL_OK;
}

static int
echo_sleep(pl_call *call, const void *inp, void *outp)
{
	const Parley__Test__V1__EchoRequest *in = inp;

	if (in->sleep_ms > 0)
		usleep((useconds_t)in->sleep_ms * 1000);
	return echo(call, inp, outp);
}

static int
echo_fail(pl_call *call, const void *inp, void *outp)
{
	const Parley__Test__V1__EchoRequest *in = inp;

	(void)outp;
	if (in->fail_code == PL_INVALID_ARGUMENT)
		return pl_call_violation(call, "text", "must not be \"%s\"",
		                         in->text);
	return pl_call_error(call, in->fail_code, "failed as asked: %s",
	                     in->text);
}

pthread_mutex_t echo_events_mtx = PTHREAD_MUTEX_INITIALIZER;
char echo_event_ids[ECHO_MAX_EVENTS][40];
char echo_event_types[ECHO_MAX_EVENTS][64];
int echo_events_distinct;
int echo_events_delivered;
bool echo_events_fail;

static int
deliver_events(pl_call *call, const void *inp, void *outp)
{
	const Parley__Rpc__V1__EventBatch *in = inp;
	int rv = PL_OK;

	(void)outp;
	pthread_mutex_lock(&echo_events_mtx);
	if (echo_events_fail) {
		rv = pl_call_error(call, PL_UNAVAILABLE, "consumer is down");
		goto out;
	}
	// As analytics' Track does: one event it cannot take refuses the
	// whole batch.
	for (size_t i = 0; i < in->n_events; i++)
		if (strcmp(in->events[i]->type, "test.poison") == 0) {
			rv = pl_call_violation(call, "events",
			                       "events[%zu].type "
			                       "is not known",
			                       i);
			goto out;
		}
	for (size_t i = 0; i < in->n_events; i++) {
		const Parley__Rpc__V1__Event *e = in->events[i];
		bool seen = false;
		echo_events_delivered++;
		for (int j = 0; j < echo_events_distinct && !seen; j++)
			seen = strcmp(echo_event_ids[j], e->id) == 0;
		if (!seen && echo_events_distinct < ECHO_MAX_EVENTS) {
			snprintf(echo_event_ids[echo_events_distinct], 40, "%s",
			         e->id);
			snprintf(echo_event_types[echo_events_distinct], 64,
			         "%s", e->type);
			echo_events_distinct++;
		}
	}
out:
	pthread_mutex_unlock(&echo_events_mtx);
	return rv;
}

static const pl_rpc_method echo_methods[] = {
	{ "Echo", echo, PL_CALLER_PUBLIC, NULL, 0 },
	{ "Sleep", echo_sleep, PL_CALLER_PUBLIC, NULL, 0 },
	{ "Fail", echo_fail, PL_CALLER_PUBLIC, NULL, 0 },
	{ "AdminOnly", echo, PL_PLATFORM_ADMIN, NULL, 0 },
	{ "ServiceOnly", echo, PL_CALLER_SERVICE, NULL, PL_RPC_NEEDS_KEY },
	{ "AgentWrite", echo, PL_ROLE_AGENT, "agents:write", 0 },
	{ "DeliverEvents", deliver_events, PL_CALLER_SERVICE, NULL, 0 },
	{ NULL, NULL, 0, NULL, 0 },
};

const pl_rpc_service echo_service = {
	&parley__test__v1__echo__descriptor,
	echo_methods,
};

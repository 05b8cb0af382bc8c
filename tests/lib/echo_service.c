#include <string.h>
#include <unistd.h>

#include "echo_service.h"

static int
echo(pl_call *call, const void *inp, void *outp)
{
	const Parley__Test__V1__EchoRequest *in  = inp;
	Parley__Test__V1__EchoReply         *out = outp;

	out->data            = in->data;
	out->text            = in->text;
	out->tenant_id       = (char *) call->principal->tenant_id;
	out->idempotency_key = (char *) (call->idempotency_key
	                                         ? call->idempotency_key
	                                         : "");
	out->remaining_ms    = pl_call_remaining_ms(call);
	return PL_OK;
}

static int
echo_sleep(pl_call *call, const void *inp, void *outp)
{
	const Parley__Test__V1__EchoRequest *in = inp;

	if (in->sleep_ms > 0)
		usleep((useconds_t) in->sleep_ms * 1000);
	return echo(call, inp, outp);
}

static int
echo_fail(pl_call *call, const void *inp, void *outp)
{
	const Parley__Test__V1__EchoRequest *in = inp;

	(void) outp;
	if (in->fail_code == PL_INVALID_ARGUMENT)
		return pl_call_violation(call, "text", "must not be \"%s\"",
		    in->text);
	return pl_call_error(call, in->fail_code, "failed as asked: %s",
	    in->text);
}

static const pl_rpc_method echo_methods[] = {
	{ "Echo", echo, PL_CALLER_PUBLIC, NULL, 0 },
	{ "Sleep", echo_sleep, PL_CALLER_PUBLIC, NULL, 0 },
	{ "Fail", echo_fail, PL_CALLER_PUBLIC, NULL, 0 },
	{ "AdminOnly", echo, PL_PLATFORM_ADMIN, NULL, 0 },
	{ "ServiceOnly", echo, PL_CALLER_SERVICE, NULL, PL_RPC_NEEDS_KEY },
	{ "AgentWrite", echo, PL_ROLE_AGENT, "agents:write", 0 },
	{ NULL, NULL, 0, NULL, 0 },
};

const pl_rpc_service echo_service = {
	&parley__test__v1__echo__descriptor,
	echo_methods,
};

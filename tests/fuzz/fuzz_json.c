// libFuzzer target for the JSON -> protobuf reader (common/src/json.c).
// Any input is either refused with a message, or parses; a parsed message
// must go out to JSON, come back in, and go out again as the same text.
// The same input read as wire bytes (pl_json_dump_wire) must give the text
// unpack + pl_json_dump_pb gives, or nothing.
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "parley/rpc/v1/envelope.pb-c.h"
#include "parley/rpc/v1/health.pb-c.h"
#include "parley/test/v1/jsontest.pb-c.h"
#include "pl/json.h"
#include "pl/status.h"

#define ARENA_LIMIT (1 << 20)

static const ProtobufCMessageDescriptor *const descs[] = {
	&parley__test__v1__json_test__descriptor,
	&parley__rpc__v1__request__descriptor,
	&parley__rpc__v1__response__descriptor,
	&parley__rpc__v1__health_check_response__descriptor,
};

static void
check(const char *text, size_t len, const ProtobufCMessageDescriptor *d)
{
	pl_arena a, b;
	char err[256] = "";
	ProtobufCMessage *m = NULL, *m2 = NULL;
	char *out = NULL, *out2 = NULL;
	size_t outlen = 0, outlen2 = 0;
	int rc;

	pl_arena_init(&a, 4096, ARENA_LIMIT);
	pl_arena_init(&b, 4096, ARENA_LIMIT);
	rc = pl_json_to_pb(text, len, d, &a, &m, err, sizeof(err));
	if (rc != PL_OK) {
		// Refused: with a reason, and nothing half-built handed out.
		if (m != NULL || err[0] == '\0' ||
		    (rc != PL_INVALID_ARGUMENT && rc != PL_RESOURCE_EXHAUSTED))
			abort();
		goto out_fini;
	}
	if ((out = pl_json_dump_pb(m, &outlen)) == NULL) {
		fprintf(stderr, "could not write back a parsed %s\n", d->name);
		abort();
	}
	rc = pl_json_to_pb(out, outlen, d, &b, &m2, err, sizeof(err));
	if (rc != PL_OK) {
		fprintf(stderr, "%s: own output refused: %s\n%s\n", d->name,
		        err, out);
		abort();
	}
	if ((out2 = pl_json_dump_pb(m2, &outlen2)) == NULL ||
	    outlen2 != outlen || memcmp(out, out2, outlen) != 0) {
		fprintf(stderr, "%s: unstable output:\n%s\n%s\n", d->name, out,
		        out2 != NULL ? out2 : "(null)");
		abort();
	}
out_fini:
	free(out);
	free(out2);
	pl_arena_fini(&a);
	pl_arena_fini(&b);
}

// The input as a message's wire form: whatever pl_json_dump_wire writes is
// what unpacking and pl_json_dump_pb write (it may give up where they
// succeed, never the other way round with a different text).
static void
check_wire(const uint8_t *data, size_t len, const ProtobufCMessageDescriptor *d)
{
	pl_arena a;
	ProtobufCMessage *m;
	char *w, *dump = NULL;
	size_t wlen = 0, dlen = 0;

	w = pl_json_dump_wire(d, data, len, &wlen);
	if (w == NULL)
		return;
	pl_arena_init(&a, 4096, ARENA_LIMIT);
	m = protobuf_c_message_unpack(d, pl_arena_pb(&a), len, data);
	if (m != NULL)
		dump = pl_json_dump_pb(m, &dlen);
	if (dump == NULL || dlen != wlen || memcmp(w, dump, wlen) != 0) {
		fprintf(stderr, "%s: wire %s\nunpacked %s\n", d->name, w,
		        dump != NULL ? dump : "(none)");
		abort();
	}
	free(dump);
	free(w);
	pl_arena_fini(&a);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	for (size_t i = 0; i < sizeof(descs) / sizeof(descs[0]); i++) {
		check((const char *)data, size, descs[i]);
		check_wire(data, size, descs[i]);
	}
	return 0;
}

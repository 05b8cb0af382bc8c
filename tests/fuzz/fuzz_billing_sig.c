// libFuzzer target for the payment provider's signature header
// (services/billing/sig.c, "t=<unix>,v1=<hex>[,v1=...]"): the input up to
// its first newline is the header, the rest the body.
//
// Contracts besides "no crash": parsing answers OK, MISSING or MALFORMED,
// and OK has a time and at most BILLING_SIG_MAX_V1 signatures; a header
// that does not parse never verifies; what billing_sig_sign writes for the
// body verifies, and stops verifying when the body or the time changes.
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "billing.h"
#include "fuzz_check.h"

#define SECRET "whsec_fuzz"

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const uint8_t *nl = memchr(data, '\n', size);
	size_t hlen = nl ? (size_t)(nl - data) : size;
	const uint8_t *body = nl ? nl + 1 : data + size;
	size_t blen = size - hlen - (nl != NULL);
	char *header = malloc(hlen + 1), signed_h[96];
	billing_sig sig;
	billing_sig_result r;
	int64_t t;

	need(header != NULL, "memory");
	memcpy(header, data, hlen);
	header[hlen] = '\0';

	r = billing_sig_parse(header, &sig);
	need(r == BILLING_SIG_OK || r == BILLING_SIG_MISSING ||
	             r == BILLING_SIG_MALFORMED,
	     "parse result");
	if (r == BILLING_SIG_OK)
		need(sig.n_v1 >= 1 && sig.n_v1 <= BILLING_SIG_MAX_V1 &&
		             sig.t >= 0,
		     "a parsed header has a time and 1..max signatures");
	else
		need(billing_sig_verify(header, body, blen, SECRET, sig.t,
		                        300) == r,
		     "what does not parse does not verify, for the same "
		     "reason");

	// Round trip at the header's time (or 1 when it has none).
	t = r == BILLING_SIG_OK && sig.t > 0 ? sig.t : 1;
	billing_sig_sign(SECRET, t, body, blen, signed_h);
	need(billing_sig_verify(signed_h, body, blen, SECRET, t, 300) ==
	             BILLING_SIG_OK,
	     "our own signature verifies");
	need(billing_sig_verify(signed_h, body, blen, "another-secret", t,
	                        300) != BILLING_SIG_OK,
	     "another secret does not");
	need(billing_sig_verify(signed_h, body, blen, SECRET, t + 301, 300) ==
	             BILLING_SIG_STALE,
	     "a time outside the tolerance is stale");
	if (blen > 0)
		need(billing_sig_verify(signed_h, body, blen - 1, SECRET, t,
		                        300) != BILLING_SIG_OK,
		     "a changed body does not verify");
	free(header);
	return 0;
}

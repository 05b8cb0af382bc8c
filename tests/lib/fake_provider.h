// A fake WhatsApp Cloud + Infobip provider on loopback (pl_httpd). It
// records every request and answers from a script: each queued reply is
// used once, in order, by the first request it matches (a reply with a
// match string is kept for a request whose body contains it, so a late
// delivery from an earlier test cannot take it); with no reply for a
// request it answers 200 with a fresh id
// ({"messages":[{"id":"wamid.fake-N"}]} or Infobip's messageId).
// As the providers, a text body over 4,096 characters or a caption over
// 1,024 (UTF-16 code units) is refused with 400 when no script says else.
#ifndef FAKE_PROVIDER_H
#define FAKE_PROVIDER_H

#include <stdbool.h>
#include <stddef.h>

typedef struct fake_provider fake_provider;

typedef struct fp_reply {
	int status;        // HTTP status
	const char *body;  // copied; NULL: "{}"
	int retry_after_s; // > 0: a Retry-After header
	int delay_ms;      // wait before answering (timeouts)
	const char *match; // copied; non-NULL: only for bodies containing it
} fp_reply;

// A text's length as the providers count it against their limits: UTF-16
// code units of the n bytes of UTF-8 at s (a 4-byte sequence counts two).
size_t fake_provider_text_units(const char *s, size_t n);

// Meta's signature of a webhook body, as WhatsApp Cloud sends it in
// X-Hub-Signature-256: "sha256=" and the hex HMAC-SHA256 of the len bytes
// at body under secret (the app secret).
void fake_provider_sign(const char *secret, const void *body, size_t len,
                        char out[72]);

// Starts on 127.0.0.1, an ephemeral port. Returns 0 or -1.
int fake_provider_start(fake_provider **out);
void fake_provider_stop(fake_provider *f);

// "http://127.0.0.1:PORT" (valid until stop).
const char *fake_provider_url(const fake_provider *f);

// Queues one reply.
void fake_provider_script(fake_provider *f, const fp_reply *r);

// Forgets recorded requests and queued replies.
void fake_provider_reset(fake_provider *f);

// Requests received so far (all of them; the first FP_MAX are recorded).
int fake_provider_count(fake_provider *f);

// Waits until at least n requests arrived or timeout_ms passed; returns the
// count.
int fake_provider_wait(fake_provider *f, int n, int timeout_ms);

// Copies request i (0-based): path, Authorization header, body (malloc'd,
// caller frees; may be NULL). Returns false when there is no such request.
bool fake_provider_request(fake_provider *f, int i, char *path, size_t pathlen,
                           char *auth, size_t authlen, char **body);

#endif

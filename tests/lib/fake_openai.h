// A fake OpenAI-compatible server on loopback for tests (built on
// pl_httpd): POST /v1/chat/completions answers from a script of queued
// answers, then a default one. Each answer can be a status, a body,
// a Retry-After header and a delay (a slow provider).
#ifndef FAKE_OPENAI_H
#define FAKE_OPENAI_H

#include <stddef.h>

typedef struct fake_openai fake_openai;

// Starts the server on an ephemeral port of 127.0.0.1; 0 or -1.
int fake_openai_start(fake_openai **out);
void fake_openai_stop(fake_openai *f);

// "http://127.0.0.1:PORT/v1", the base URL to configure.
const char *fake_openai_url(const fake_openai *f);

// Queues one answer (body copied; retry_after NULL for none).
void fake_openai_push(fake_openai *f, int status, const char *body,
                      const char *retry_after, int delay_ms);

// Queues a 200 answer of size bytes that is not valid JSON ("oversized").
void fake_openai_push_big(fake_openai *f, size_t size);

// Sets the answer used when the queue is empty (initially a 200 text
// completion saying "fake answer").
void fake_openai_set_default(fake_openai *f, int status, const char *body);

// A chat.completion body with content text (malloc'd).
char *fake_openai_text_body(const char *text, int prompt_tokens,
                            int completion_tokens);

// Requests received so far, and a malloc'd copy of the last body (NULL
// when none) and of its Authorization header.
int fake_openai_requests(fake_openai *f);
char *fake_openai_last_body(fake_openai *f);
char *fake_openai_last_auth(fake_openai *f);

#endif

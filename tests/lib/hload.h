// A minimal HTTP/1.1 keep-alive client for load generators: one blocking
// connection to 127.0.0.1:port, one request at a time. The benchmarks'
// load shares the machine's cores with the system they measure, and
// stack_http (libcurl through pl_httpc) costs tens of microseconds of CPU
// per request; this costs a few system calls and a parse.
//
// It speaks what the project's servers answer: Content-Length or chunked
// bodies, or a body up to the close; a header block up to 64 KiB, a body
// up to 16 MiB. Not for a server one does not control (no TLS, no
// redirects, 10 s timeouts per send or receive).
#ifndef HLOAD_H
#define HLOAD_H

#include <stddef.h>

typedef struct hload hload;

// A connection to 127.0.0.1:port (TCP_NODELAY), connected now; NULL when
// it cannot connect.
hload *hload_open(int port);

// Sends one request: method, path ("/v1/x?y=1"), extra "Name: value"
// header lines (NULL-terminated or NULL) and a body of body_len bytes
// (NULL: none; Content-Length is added when there is one), then reads the
// answer. *status gets the HTTP status (0 until a status line is read);
// with out non-NULL, *out gets the body, malloc'd and NUL-terminated
// (the caller frees it; NULL on failure). Returns 0, or -1 on a connection
// error, a timeout, a malformed answer or one past the limits.
//
// A connection the server closed is opened again on the next call; when a
// reused connection fails before any byte of the answer (the server closed
// it while idle), the request is sent once more on a new one.
int hload_do(hload *h, const char *method, const char *path,
             const char *const *headers, const char *body, size_t body_len,
             long *status, char **out);

// Closes the connection and frees h (NULL is fine).
void hload_close(hload *h);

#endif

// JSON-lines logging on stderr: {"ts","level","service","msg",...}. The
// service name is set once; request id and tenant come from the calling
// thread's context (pl_log_ctx_set). Never pass a secret to these.
#ifndef PL_LOG_H
#define PL_LOG_H

#include <stdio.h>

typedef enum pl_log_level {
	PL_LOG_DEBUG = 0,
	PL_LOG_INFO = 1,
	PL_LOG_WARN = 2,
	PL_LOG_ERROR = 3,
} pl_log_level;

// Sets the service name and minimum level for the process.
void pl_log_init(const char *service, pl_log_level min);

// Parses "debug", "info", "warn", "error"; returns -1 on anything else.
int pl_log_level_parse(const char *s);

// Redirects output (tests capture logs this way); NULL restores stderr.
void pl_log_set_stream(FILE *f);

// Sets this thread's request id and tenant (copied; NULL clears).
void pl_log_ctx_set(const char *request_id, const char *tenant_id);

// Logs one line (the message is printf-formatted and JSON-escaped).
void pl_logf(pl_log_level lvl, const char *fmt, ...)
        __attribute__((format(printf, 2, 3)));

#define pl_debug(...) pl_logf(PL_LOG_DEBUG, __VA_ARGS__)
#define pl_info(...)  pl_logf(PL_LOG_INFO, __VA_ARGS__)
#define pl_warn(...)  pl_logf(PL_LOG_WARN, __VA_ARGS__)
#define pl_error(...) pl_logf(PL_LOG_ERROR, __VA_ARGS__)

#endif

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fake_openai.h"
#include "pl/httpd.h"

typedef struct answer {
	int status;
	char *body;
	size_t len;
	char *retry_after;
	int delay_ms;
	struct answer *next;
} answer;

struct fake_openai {
	pl_httpd *d;
	char url[64];
	pthread_mutex_t mtx;
	answer *head, *tail;
	int def_status;
	char *def_body;
	int requests;
	char *last_body, *last_auth;
};

static void
handle(const pl_http_req *req, pl_http_resp *resp, void *arg)
{
	fake_openai *f = arg;
	answer *a;
	const char *auth = pl_http_req_header(req, "Authorization");

	if (strcmp(req->method, "POST") != 0 ||
	    strcmp(req->path, "/v1/chat/completions") != 0) {
		pl_http_resp_set(resp, 404, "application/json", "{}", 2);
		return;
	}
	pthread_mutex_lock(&f->mtx);
	f->requests++;
	free(f->last_body);
	free(f->last_auth);
	f->last_body = req->body ? strdup(req->body) : NULL;
	f->last_auth = auth ? strdup(auth) : NULL;
	a = f->head;
	if (a != NULL) {
		f->head = a->next;
		if (f->head == NULL)
			f->tail = NULL;
	}
	pthread_mutex_unlock(&f->mtx);
	if (a == NULL) {
		pthread_mutex_lock(&f->mtx);
		pl_http_resp_set(resp, f->def_status, "application/json",
		                 f->def_body, strlen(f->def_body));
		pthread_mutex_unlock(&f->mtx);
		return;
	}
	if (a->delay_ms > 0)
		usleep((useconds_t)a->delay_ms * 1000);
	pl_http_resp_set(resp, a->status, "application/json", a->body, a->len);
	if (a->retry_after)
		pl_http_resp_header(resp, "Retry-After", a->retry_after);
	free(a->body);
	free(a->retry_after);
	free(a);
}

char *
fake_openai_text_body(const char *text, int pt, int ct)
{
	char *s = NULL;

	if (asprintf(&s,
	             "{\"id\":\"chatcmpl-fake\",\"object\":\"chat.completion\","
	             "\"created\":1700000000,\"model\":\"fake-model\","
	             "\"choices\":"
	             "[{\"index\":0,\"message\":{\"role\":\"assistant\","
	             "\"content\":\"%s\"},\"finish_reason\":\"stop\"}],"
	             "\"usage\":"
	             "{\"prompt_tokens\":%d,\"completion_tokens\":%d,"
	             "\"total_tokens\":%d}}",
	             text, pt, ct, pt + ct) < 0)
		return NULL;
	return s;
}

int
fake_openai_start(fake_openai **out)
{
	fake_openai *f = calloc(1, sizeof(*f));
	pl_httpd_config cfg = { 0 };

	if (f == NULL)
		return -1;
	pthread_mutex_init(&f->mtx, NULL);
	f->def_status = 200;
	f->def_body = fake_openai_text_body("fake answer", 10, 5);
	cfg.bind = "127.0.0.1";
	cfg.threads = 4;
	cfg.max_body = 4 << 20;
	if (pl_httpd_start(&f->d, &cfg, handle, f) != 0) {
		free(f->def_body);
		free(f);
		return -1;
	}
	snprintf(f->url, sizeof(f->url), "http://127.0.0.1:%u/v1",
	         (unsigned)pl_httpd_port(f->d));
	*out = f;
	return 0;
}

void
fake_openai_stop(fake_openai *f)
{
	if (f == NULL)
		return;
	pl_httpd_stop(f->d);
	while (f->head) {
		answer *n = f->head->next;
		free(f->head->body);
		free(f->head->retry_after);
		free(f->head);
		f->head = n;
	}
	free(f->def_body);
	free(f->last_body);
	free(f->last_auth);
	pthread_mutex_destroy(&f->mtx);
	free(f);
}

const char *
fake_openai_url(const fake_openai *f)
{
	return f->url;
}

static void
push(fake_openai *f, int status, char *body, size_t len,
     const char *retry_after, int delay_ms)
{
	answer *a = calloc(1, sizeof(*a));

	a->status = status;
	a->body = body;
	a->len = len;
	a->retry_after = retry_after ? strdup(retry_after) : NULL;
	a->delay_ms = delay_ms;
	pthread_mutex_lock(&f->mtx);
	if (f->tail)
		f->tail->next = a;
	else
		f->head = a;
	f->tail = a;
	pthread_mutex_unlock(&f->mtx);
}

void
fake_openai_push(fake_openai *f, int status, const char *body,
                 const char *retry_after, int delay_ms)
{
	push(f, status, strdup(body ? body : ""), body ? strlen(body) : 0,
	     retry_after, delay_ms);
}

void
fake_openai_push_big(fake_openai *f, size_t size)
{
	char *b = malloc(size + 1);

	memset(b, 'x', size);
	b[0] = '{';
	b[size] = '\0';
	push(f, 200, b, size, NULL, 0);
}

void
fake_openai_set_default(fake_openai *f, int status, const char *body)
{
	pthread_mutex_lock(&f->mtx);
	free(f->def_body);
	f->def_body = strdup(body);
	f->def_status = status;
	pthread_mutex_unlock(&f->mtx);
}

int
fake_openai_requests(fake_openai *f)
{
	int n;

	pthread_mutex_lock(&f->mtx);
	n = f->requests;
	pthread_mutex_unlock(&f->mtx);
	return n;
}

char *
fake_openai_last_body(fake_openai *f)
{
	char *s;

	pthread_mutex_lock(&f->mtx);
	s = f->last_body ? strdup(f->last_body) : NULL;
	pthread_mutex_unlock(&f->mtx);
	return s;
}

char *
fake_openai_last_auth(fake_openai *f)
{
	char *s;

	pthread_mutex_lock(&f->mtx);
	s = f->last_auth ? strdup(f->last_auth) : NULL;
	pthread_mutex_unlock(&f->mtx);
	return s;
}

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>
#include <sodium.h>

#include "fake_provider.h"
#include "pl/httpd.h"

#define FP_MAX    1024
#define FP_SCRIPT 64

typedef struct fp_req {
	char path[256];
	char auth[256];
	char *body;
} fp_req;

struct fake_provider {
	pl_httpd *d;
	char url[64];
	pthread_mutex_t mu;
	fp_req reqs[FP_MAX];
	int n;     // recorded (at most FP_MAX)
	int total; // received
	fp_reply script[FP_SCRIPT];
	char *bodies[FP_SCRIPT];
	char *matches[FP_SCRIPT];
	bool used[FP_SCRIPT];
	int head, tail;
	int ids;
};

size_t
fake_provider_text_units(const char *s, size_t n)
{
	size_t u = 0;
	for (size_t i = 0; i < n; i++)
		if (((unsigned char)s[i] & 0xc0) != 0x80)
			u += (unsigned char)s[i] >= 0xf0 ? 2 : 1;
	return u;
}

// As the providers: a text body over 4,096 characters or a caption over
// 1,024 is refused with 400 (WhatsApp's error 100, invalid parameter).
static bool
too_long(const char *body)
{
	json_t *j = body ? json_loads(body, 0, NULL) : NULL, *m;
	const char *t;
	bool bad = false;
	const char *media[] = { "image", "video", "document" };

	if (j == NULL)
		return false;
	t = json_string_value(
	        json_object_get(json_object_get(j, "text"), "body"));
	if (t == NULL) // Infobip
		t = json_string_value(
		        json_object_get(json_object_get(j, "content"), "text"));
	bad = t != NULL && fake_provider_text_units(t, strlen(t)) > 4096;
	for (size_t i = 0; i < 3 && !bad; i++) {
		m = json_object_get(j, media[i]);
		t = json_string_value(json_object_get(m, "caption"));
		bad = t != NULL &&
		      fake_provider_text_units(t, strlen(t)) > 1024;
	}
	json_decref(j);
	return bad;
}

static void
handle(const pl_http_req *req, pl_http_resp *resp, void *arg)
{
	fake_provider *f = arg;
	fp_reply r = { 200, NULL, 0, 0, NULL };
	char *body = NULL, buf[128];
	const char *auth = pl_http_req_header(req, "Authorization");
	int id;

	pthread_mutex_lock(&f->mu);
	f->total++;
	if (f->n < FP_MAX) {
		fp_req *q = &f->reqs[f->n++];
		snprintf(q->path, sizeof(q->path), "%s", req->path);
		snprintf(q->auth, sizeof(q->auth), "%s", auth ? auth : "");
		q->body = req->body ? strdup(req->body) : NULL;
	}
	for (int i = f->head; i < f->tail; i++) {
		int k = i % FP_SCRIPT;
		if (f->used[k] || (f->matches[k] != NULL &&
		                   (req->body == NULL ||
		                    strstr(req->body, f->matches[k]) == NULL)))
			continue;
		r = f->script[k];
		body = f->bodies[k];
		f->bodies[k] = NULL;
		f->used[k] = true;
		break;
	}
	while (f->head < f->tail && f->used[f->head % FP_SCRIPT]) {
		int k = f->head % FP_SCRIPT;
		free(f->matches[k]);
		f->matches[k] = NULL;
		f->used[k] = false;
		f->head++;
	}
	id = ++f->ids;
	pthread_mutex_unlock(&f->mu);
	if (r.delay_ms > 0)
		usleep((useconds_t)r.delay_ms * 1000);
	if (r.retry_after_s > 0) {
		snprintf(buf, sizeof(buf), "%d", r.retry_after_s);
		pl_http_resp_header(resp, "Retry-After", buf);
	}
	if (body == NULL && r.status == 200 && too_long(req->body)) {
		static const char err[] =
		        "{\"error\":{\"message\":\"(#100) Invalid "
		        "parameter\",\"type\":\"OAuthException\",\"code\":"
		        "100,\"fbtrace_id\":\"fake\"}}";
		pl_http_resp_set(resp, 400, "application/json", err,
		                 strlen(err));
	} else if (body == NULL && r.status == 200) {
		if (strstr(req->path, "/whatsapp/1/message") != NULL)
			snprintf(buf, sizeof(buf),
			         "{\"messages\":[{\"messageId\":\"ib-fake-%d\"}"
			         "]}",
			         id);
		else
			snprintf(buf, sizeof(buf),
			         "{\"messages\":[{\"id\":\"wamid.fake-%d\"}]}",
			         id);
		pl_http_resp_set(resp, 200, "application/json", buf,
		                 strlen(buf));
	} else {
		const char *b = body ? body : "{}";
		pl_http_resp_set(resp, r.status, "application/json", b,
		                 strlen(b));
	}
	free(body);
}

int
fake_provider_start(fake_provider **out)
{
	fake_provider *f = calloc(1, sizeof(*f));
	pl_httpd_config c = { 0 };

	if (f == NULL)
		return -1;
	pthread_mutex_init(&f->mu, NULL);
	c.bind = "127.0.0.1";
	c.threads = 8;
	if (pl_httpd_start(&f->d, &c, handle, f) != 0) {
		free(f);
		return -1;
	}
	snprintf(f->url, sizeof(f->url), "http://127.0.0.1:%u",
	         (unsigned)pl_httpd_port(f->d));
	*out = f;
	return 0;
}

void
fake_provider_reset(fake_provider *f)
{
	pthread_mutex_lock(&f->mu);
	for (int i = 0; i < f->n; i++)
		free(f->reqs[i].body);
	f->n = 0;
	f->total = 0;
	for (int i = 0; i < FP_SCRIPT; i++) {
		free(f->bodies[i]);
		free(f->matches[i]);
		f->bodies[i] = NULL;
		f->matches[i] = NULL;
		f->used[i] = false;
	}
	f->head = f->tail = 0;
	pthread_mutex_unlock(&f->mu);
}

void
fake_provider_stop(fake_provider *f)
{
	if (f == NULL)
		return;
	pl_httpd_stop(f->d);
	fake_provider_reset(f);
	pthread_mutex_destroy(&f->mu);
	free(f);
}

const char *
fake_provider_url(const fake_provider *f)
{
	return f->url;
}

void
fake_provider_script(fake_provider *f, const fp_reply *r)
{
	pthread_mutex_lock(&f->mu);
	if (f->tail - f->head < FP_SCRIPT) {
		f->script[f->tail % FP_SCRIPT] = *r;
		f->bodies[f->tail % FP_SCRIPT] =
		        r->body ? strdup(r->body) : NULL;
		f->matches[f->tail % FP_SCRIPT] =
		        r->match ? strdup(r->match) : NULL;
		f->used[f->tail % FP_SCRIPT] = false;
		f->tail++;
	}
	pthread_mutex_unlock(&f->mu);
}

int
fake_provider_count(fake_provider *f)
{
	int n;

	pthread_mutex_lock(&f->mu);
	n = f->total;
	pthread_mutex_unlock(&f->mu);
	return n;
}

int
fake_provider_wait(fake_provider *f, int n, int timeout_ms)
{
	int have = 0;

	for (int waited = 0; waited <= timeout_ms; waited += 10) {
		have = fake_provider_count(f);
		if (have >= n)
			break;
		usleep(10000);
	}
	return have;
}

bool
fake_provider_request(fake_provider *f, int i, char *path, size_t pathlen,
                      char *auth, size_t authlen, char **body)
{
	bool ok = false;

	pthread_mutex_lock(&f->mu);
	if (i >= 0 && i < f->n) {
		if (path)
			snprintf(path, pathlen, "%s", f->reqs[i].path);
		if (auth)
			snprintf(auth, authlen, "%s", f->reqs[i].auth);
		if (body)
			*body = f->reqs[i].body ? strdup(f->reqs[i].body)
			                        : NULL;
		ok = true;
	}
	pthread_mutex_unlock(&f->mu);
	return ok;
}

void
fake_provider_sign(const char *secret, const void *body, size_t len,
                   char out[72])
{
	unsigned char mac[crypto_auth_hmacsha256_BYTES];
	char hex[2 * crypto_auth_hmacsha256_BYTES + 1];
	crypto_auth_hmacsha256_state st;

	crypto_auth_hmacsha256_init(&st, (const unsigned char *)secret,
	                            strlen(secret));
	crypto_auth_hmacsha256_update(&st, body, len);
	crypto_auth_hmacsha256_final(&st, mac);
	sodium_bin2hex(hex, sizeof(hex), mac, sizeof(mac));
	snprintf(out, 72, "sha256=%s", hex);
}

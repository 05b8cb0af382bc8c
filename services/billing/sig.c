// Payment webhook signatures: "t=<unix>,v1=<hex HMAC-SHA256 of t.body>".
#include <stdio.h>
#include <string.h>

#include <sodium.h>

#include "billing.h"

#define SIG_HEADER_MAX 1024

static int
hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

billing_sig_result
billing_sig_parse(const char *header, billing_sig *out)
{
	const char *p = header;
	bool have_t = false;

	memset(out, 0, sizeof(*out));
	if (header == NULL || header[0] == '\0')
		return BILLING_SIG_MISSING;
	if (strlen(header) > SIG_HEADER_MAX)
		return BILLING_SIG_MALFORMED;
	while (*p != '\0') {
		const char *item = p, *eq, *end;
		size_t klen, vlen;

		while (*p == ' ')
			p++;
		item = p;
		end = strchr(p, ',');
		if (end == NULL)
			end = p + strlen(p);
		eq = memchr(item, '=', (size_t)(end - item));
		if (eq == NULL)
			return BILLING_SIG_MALFORMED;
		klen = (size_t)(eq - item);
		vlen = (size_t)(end - eq - 1);
		if (klen == 1 && item[0] == 't') {
			int64_t t = 0;
			if (have_t || vlen == 0 || vlen > 12)
				return BILLING_SIG_MALFORMED;
			for (size_t i = 0; i < vlen; i++) {
				if (eq[1 + i] < '0' || eq[1 + i] > '9')
					return BILLING_SIG_MALFORMED;
				t = t * 10 + (eq[1 + i] - '0');
			}
			out->t = t;
			have_t = true;
		} else if (klen == 2 && item[0] == 'v' && item[1] == '1') {
			uint8_t *d;
			if (vlen != 64 || out->n_v1 >= BILLING_SIG_MAX_V1)
				return BILLING_SIG_MALFORMED;
			d = out->v1[out->n_v1];
			for (size_t i = 0; i < 32; i++) {
				int hi = hexval(eq[1 + 2 * i]);
				int lo = hexval(eq[2 + 2 * i]);
				if (hi < 0 || lo < 0)
					return BILLING_SIG_MALFORMED;
				d[i] = (uint8_t)(hi << 4 | lo);
			}
			out->n_v1++;
		}
		// Other schemes (v0, ...) are ignored, as providers add them.
		p = *end == ',' ? end + 1 : end;
	}
	if (!have_t || out->n_v1 == 0)
		return BILLING_SIG_MALFORMED;
	return BILLING_SIG_OK;
}

void
billing_sig_mac(const char *secret, int64_t t, const uint8_t *body, size_t len,
                uint8_t mac[32])
{
	crypto_auth_hmacsha256_state st;
	char ts[32];
	int n = snprintf(ts, sizeof(ts), "%lld.", (long long)t);

	crypto_auth_hmacsha256_init(&st, (const unsigned char *)secret,
	                            strlen(secret));
	crypto_auth_hmacsha256_update(&st, (const unsigned char *)ts,
	                              (unsigned long long)n);
	if (len > 0)
		crypto_auth_hmacsha256_update(&st, body, len);
	crypto_auth_hmacsha256_final(&st, mac);
	sodium_memzero(&st, sizeof(st));
}

billing_sig_result
billing_sig_verify(const char *header, const uint8_t *body, size_t len,
                   const char *secret, int64_t now, int64_t tolerance)
{
	billing_sig sig;
	billing_sig_result r = billing_sig_parse(header, &sig);
	uint8_t mac[32];
	int match = 0;

	if (r != BILLING_SIG_OK)
		return r;
	if (sig.t < now - tolerance || sig.t > now + tolerance)
		return BILLING_SIG_STALE;
	billing_sig_mac(secret, sig.t, body, len, mac);
	// Compare with every candidate (no early exit) in constant time.
	for (int i = 0; i < sig.n_v1; i++)
		match |= sodium_memcmp(mac, sig.v1[i], sizeof(mac)) == 0;
	sodium_memzero(mac, sizeof(mac));
	return match ? BILLING_SIG_OK : BILLING_SIG_MISMATCH;
}

void
billing_sig_sign(const char *secret, int64_t t, const uint8_t *body, size_t len,
                 char out[96])
{
	uint8_t mac[32];
	char hex[65];

	billing_sig_mac(secret, t, body, len, mac);
	sodium_bin2hex(hex, sizeof(hex), mac, sizeof(mac));
	snprintf(out, 96, "t=%lld,v1=%s", (long long)t, hex);
}

// The client's address behind trusted proxies (PARLEY_TRUSTED_PROXIES).
//
// Behind an Ingress every connection comes from the proxy, so sign-up and
// login throttling, web-chat sessions and webhook records would all see the
// proxy's address. A proxy appends the address it was connected from to
// X-Forwarded-For; the entries to its left are whatever the client sent.
// So the header is read from the right: past every trusted proxy, the first
// address that is not one is the client's. Nothing left of it is believed.
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gateway.h"

// IPv4 is kept as its IPv4-mapped IPv6 form (::ffff:a.b.c.d), so that one
// comparison covers both families and a mapped peer matches a v4 range.
static bool
parse_addr(const char *s, size_t n, uint8_t out[16])
{
	char buf[INET6_ADDRSTRLEN];
	struct in_addr v4;

	if (n == 0 || n >= sizeof(buf))
		return false;
	memcpy(buf, s, n);
	buf[n] = '\0';
	if (inet_pton(AF_INET, buf, &v4) == 1) {
		memset(out, 0, 10);
		out[10] = out[11] = 0xff;
		memcpy(out + 12, &v4, 4);
		return true;
	}
	return inet_pton(AF_INET6, buf, out) == 1;
}

static bool
is_mapped_v4(const uint8_t a[16])
{
	static const uint8_t prefix[12] = { 0, 0, 0, 0, 0,    0,
		                            0, 0, 0, 0, 0xff, 0xff };
	return memcmp(a, prefix, sizeof(prefix)) == 0;
}

static void
format_addr(const uint8_t a[16], char *out, size_t outlen)
{
	if (is_mapped_v4(a))
		inet_ntop(AF_INET, a + 12, out, (socklen_t)outlen);
	else
		inet_ntop(AF_INET6, a, out, (socklen_t)outlen);
}

static bool
in_net(const gw_net *net, const uint8_t a[16])
{
	int full = net->bits / 8, rest = net->bits % 8;

	if (memcmp(net->addr, a, (size_t)full) != 0)
		return false;
	if (rest == 0)
		return true;
	uint8_t mask = (uint8_t)(0xff << (8 - rest));
	return (net->addr[full] & mask) == (a[full] & mask);
}

static bool
trusted(const gw_net *nets, size_t n, const uint8_t a[16])
{
	for (size_t i = 0; i < n; i++)
		if (in_net(&nets[i], a))
			return true;
	return false;
}

int
gw_proxies_parse(const char *list, gw_net **out, size_t *n_out, char *err,
                 size_t errlen)
{
	gw_net *nets = NULL;
	size_t n = 0;
	const char *s = list ? list : "";

	*out = NULL;
	*n_out = 0;
	while (*s != '\0') {
		size_t len = strcspn(s, ",");
		const char *b = s, *e = s + len, *slash;
		uint8_t a[16];
		long bits;
		bool v4;

		while (b < e && (*b == ' ' || *b == '\t'))
			b++;
		while (e > b && (e[-1] == ' ' || e[-1] == '\t'))
			e--;
		s += len + (s[len] == ',');
		if (b == e)
			continue;
		slash = memchr(b, '/', (size_t)(e - b));
		if (!parse_addr(b, (size_t)((slash ? slash : e) - b), a))
			goto bad;
		// An IPv4 range counts its bits over the mapped form's 96.
		v4 = memchr(b, ':', (size_t)((slash ? slash : e) - b)) == NULL;
		bits = 128;
		if (slash != NULL) {
			char digits[4], *end;
			size_t k = (size_t)(e - slash - 1);
			if (k == 0 || k >= sizeof(digits) || slash[1] < '0' ||
			    slash[1] > '9')
				goto bad;
			memcpy(digits, slash + 1, k);
			digits[k] = '\0';
			bits = strtol(digits, &end, 10);
			if (*end != '\0' || bits > (v4 ? 32 : 128))
				goto bad;
			if (v4)
				bits += 96;
		}
		if (n == GW_MAX_PROXIES) {
			snprintf(err, errlen, "more than %d entries",
			         GW_MAX_PROXIES);
			free(nets);
			return -1;
		}
		gw_net *grown = realloc(nets, (n + 1) * sizeof(*nets));
		if (grown == NULL) {
			snprintf(err, errlen, "out of memory");
			free(nets);
			return -1;
		}
		nets = grown;
		memcpy(nets[n].addr, a, 16);
		nets[n].bits = (int)bits;
		// Host bits set in the range are ignored, as a mask would.
		for (int i = nets[n].bits; i < 128; i++)
			nets[n].addr[i / 8] &= (uint8_t) ~(0x80 >> (i % 8));
		n++;
		continue;
	bad:
		snprintf(err, errlen,
		         "\"%.*s\" is not an address or an address/bits range",
		         (int)(e - b > 64 ? 64 : e - b), b);
		free(nets);
		return -1;
	}
	*out = nets;
	*n_out = n;
	return 0;
}

void
gw_client_ip(const gw_net *nets, size_t n, const char *peer, const char *xff,
             char *out, size_t outlen)
{
	uint8_t a[16];
	const char *end;
	int hops = 0;

	snprintf(out, outlen, "%s", peer ? peer : "");
	if (n == 0 || xff == NULL || peer == NULL ||
	    !parse_addr(peer, strlen(peer), a) || !trusted(nets, n, a))
		return;
	// Right to left, one entry at a time, at most GW_MAX_HOPS of them.
	end = xff + strlen(xff);
	while (end > xff && hops++ < GW_MAX_HOPS) {
		const char *b = end, *e = end;
		while (b > xff && b[-1] != ',')
			b--;
		end = b > xff ? b - 1 : xff;
		while (b < e && (*b == ' ' || *b == '\t'))
			b++;
		while (e > b && (e[-1] == ' ' || e[-1] == '\t'))
			e--;
		// Something that is not an address: the client is the last
		// hop that could be read (a proxy's record of it).
		if (!parse_addr(b, (size_t)(e - b), a))
			return;
		format_addr(a, out, outlen);
		if (!trusted(nets, n, a))
			return;
	}
}

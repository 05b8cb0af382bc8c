// Phone numbers: E.164 normalization and the lookup variants of Brazilian
// mobiles (the ninth digit, added in 2012-2016, is often missing in
// numbers WhatsApp reports for older accounts).
#include <ctype.h>
#include <stdio.h>
#include <string.h>

#include "messaging.h"

bool
messaging_phone_normalize(const char *raw, char out[MSG_PHONE_MAX])
{
	char d[MSG_PHONE_MAX];
	size_t n = 0;
	const char *p = raw;

	if (raw == NULL)
		return false;
	while (isspace((unsigned char)*p))
		p++;
	if (*p == '+')
		p++;
	else if (p[0] == '0' && p[1] == '0')
		p += 2;
	for (; *p != '\0'; p++) {
		if (isdigit((unsigned char)*p)) {
			if (n >= 15)
				return false;
			d[n++] = *p;
		} else if (strchr(" -().\t/", *p) == NULL) {
			return false;
		}
	}
	if (n < 8 || d[0] == '0')
		return false;
	out[0] = '+';
	memcpy(out + 1, d, n);
	out[n + 1] = '\0';
	return true;
}

int
messaging_phone_variants(const char *e164, char a[MSG_PHONE_MAX],
                         char b[MSG_PHONE_MAX])
{
	size_t n = strlen(e164);

	snprintf(a, MSG_PHONE_MAX, "%s", e164);
	if (strncmp(e164, "+55", 3) != 0)
		return 1;
	// +55 DD 9XXXXXXXX (14 chars) <-> +55 DD XXXXXXXX (13 chars), for
	// mobiles only (local numbers starting 6-9).
	if (n == 14 && e164[5] == '9' && e164[6] >= '6') {
		memcpy(b, e164, 5);
		memcpy(b + 5, e164 + 6, n - 6 + 1);
		return 2;
	}
	if (n == 13 && e164[5] >= '6') {
		memcpy(b, e164, 5);
		b[5] = '9';
		memcpy(b + 6, e164 + 5, n - 5 + 1);
		return 2;
	}
	return 1;
}

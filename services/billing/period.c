// Time, billing periods and money arithmetic: pure functions, no SQL.
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "billing.h"

static int64_t
floor_div(int64_t a, int64_t b)
{
	int64_t q = a / b;
	if ((a % b != 0) && ((a < 0) != (b < 0)))
		q--;
	return q;
}

// Civil-date arithmetic on 400-year eras (146,097 days each), with years
// counted from March so that the leap day falls at the end of a year.
int64_t
billing_days_from_civil(int y, int m, int d)
{
	int64_t yy = (int64_t)y - (m <= 2);
	int64_t era = floor_div(yy, 400);
	int64_t yoe = yy - era * 400;                        // [0, 399]
	int64_t mp = (m + 9) % 12;                           // March = 0
	int64_t doy = (153 * mp + 2) / 5 + d - 1;            // [0, 365]
	int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy; // [0, 146096]
	return era * 146097 + doe - 719468;
}

void
billing_civil_from_days(int64_t days, int *y, int *m, int *d)
{
	int64_t z = days + 719468;
	int64_t era = floor_div(z, 146097);
	int64_t doe = z - era * 146097;
	int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
	int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
	int64_t mp = (5 * doy + 2) / 153;
	int64_t dd = doy - (153 * mp + 2) / 5 + 1;
	int64_t mm = mp < 10 ? mp + 3 : mp - 9;
	*y = (int)(yoe + era * 400 + (mm <= 2));
	*m = (int)mm;
	*d = (int)dd;
}

static bool
is_leap(int y)
{
	return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
}

int
billing_month_days(int y, int m)
{
	static const int days[12] = { 31, 28, 31, 30, 31, 30,
		                      31, 31, 30, 31, 30, 31 };
	if (m < 1 || m > 12)
		return 0;
	return m == 2 && is_leap(y) ? 29 : days[m - 1];
}

int64_t
billing_day_start(int64_t t)
{
	return floor_div(t, BILLING_DAY_S) * BILLING_DAY_S;
}

int64_t
billing_add_months(int64_t anchor_day, int k)
{
	int y, m, d, md;
	int64_t mi;

	billing_civil_from_days(floor_div(anchor_day, BILLING_DAY_S), &y, &m,
	                        &d);
	mi = (int64_t)y * 12 + (m - 1) + k;
	y = (int)floor_div(mi, 12);
	m = (int)(mi - (int64_t)y * 12) + 1;
	md = billing_month_days(y, m);
	if (d > md)
		d = md;
	return billing_days_from_civil(y, m, d) * BILLING_DAY_S;
}

void
billing_month_period(int64_t anchor_day, int64_t t, int64_t *start,
                     int64_t *end)
{
	int ay, am, ad, ty, tm, td, k;
	int64_t s;

	anchor_day = billing_day_start(anchor_day);
	billing_civil_from_days(floor_div(anchor_day, BILLING_DAY_S), &ay, &am,
	                        &ad);
	billing_civil_from_days(floor_div(t, BILLING_DAY_S), &ty, &tm, &td);
	k = (ty - ay) * 12 + (tm - am);
	s = billing_add_months(anchor_day, k);
	if (s > t) {
		k--;
		s = billing_add_months(anchor_day, k);
	}
	*start = s;
	*end = billing_add_months(anchor_day, k + 1);
}

int64_t
billing_prorate(int64_t amount, int64_t num, int64_t den)
{
	__int128 p;

	if (amount < 0 || num < 0 || den <= 0 || num > den)
		return -1;
	// Half up: floor((2 * amount * num + den) / (2 * den)).
	p = (__int128)amount * num * 2 + den;
	return (int64_t)(p / ((__int128)den * 2));
}

int64_t
billing_overage_charge(int64_t units, int64_t price_per_1000)
{
	__int128 p;

	if (units < 0 || price_per_1000 < 0)
		return -1;
	p = ((__int128)units * price_per_1000 + 500) / 1000;
	if (p > INT64_MAX)
		return -1;
	return (int64_t)p;
}

int64_t
billing_period_fee(int64_t price_minor, int interval)
{
	if (interval ==
	    PARLEY__BILLING__V1__BILLING_INTERVAL__BILLING_INTERVAL_YEAR)
		return billing_prorate(price_minor, 1, 12);
	return price_minor;
}

// The currencies a plan may be priced in (ISO 4217; those with payment
// provider support that Parley's customers asked for so far).
static const char *const currencies[] = {
	"ARS", "AUD", "BRL", "CAD", "CHF", "CLP", "CNY", "COP", "CZK",
	"DKK", "EUR", "GBP", "HKD", "IDR", "ILS", "INR", "JPY", "KRW",
	"MXN", "MYR", "NGN", "NOK", "NZD", "PEN", "PHP", "PLN", "SEK",
	"SGD", "THB", "TRY", "USD", "UYU", "ZAR", NULL
};

bool
billing_currency_valid(const char *code)
{
	if (code == NULL || strlen(code) != 3)
		return false;
	for (int i = 0; currencies[i] != NULL; i++)
		if (strcmp(currencies[i], code) == 0)
			return true;
	return false;
}

static const char *const metric_names[] = { NULL, "messages", "campaigns",
	                                    "ai_tokens" };

const char *
billing_metric_name(int metric)
{
	if (metric < 1 || metric > 3)
		return NULL;
	return metric_names[metric];
}

int
billing_metric_parse(const char *name)
{
	for (int i = 1; name != NULL && i <= 3; i++)
		if (strcmp(metric_names[i], name) == 0)
			return i;
	return -1;
}

static const char *const status_names[] = { NULL,       "trialing", "active",
	                                    "past_due", "canceled", "expired" };

const char *
billing_status_name(int status)
{
	if (status < 1 || status > 5)
		return NULL;
	return status_names[status];
}

int
billing_status_parse(const char *name)
{
	for (int i = 1; name != NULL && i <= 5; i++)
		if (strcmp(status_names[i], name) == 0)
			return i;
	return -1;
}

// Reads exactly n digits at *p.
static bool
digits(const char **p, int n, int *out)
{
	int v = 0;
	for (int i = 0; i < n; i++) {
		if (!isdigit((unsigned char)(*p)[i]))
			return false;
		v = v * 10 + ((*p)[i] - '0');
	}
	*p += n;
	*out = v;
	return true;
}

bool
billing_parse_time(const char *s, int64_t *ms)
{
	int y, mo, d, h, mi, sec, oh = 0, om = 0, sign = 0;
	int64_t frac = 0;
	const char *p = s;

	if (s == NULL || strlen(s) > 40)
		return false;
	if (!digits(&p, 4, &y) || *p++ != '-' || !digits(&p, 2, &mo) ||
	    *p++ != '-' || !digits(&p, 2, &d) || (*p != 'T' && *p != 't'))
		return false;
	p++;
	if (!digits(&p, 2, &h) || *p++ != ':' || !digits(&p, 2, &mi) ||
	    *p++ != ':' || !digits(&p, 2, &sec))
		return false;
	if (*p == '.') {
		int n = 0;
		p++;
		while (isdigit((unsigned char)*p)) {
			if (n < 3)
				frac = frac * 10 + (*p - '0');
			n++;
			p++;
		}
		if (n == 0 || n > 9)
			return false;
		for (; n < 3; n++)
			frac *= 10;
	}
	if (*p == 'Z' || *p == 'z') {
		p++;
	} else if (*p == '+' || *p == '-') {
		sign = *p == '-' ? -1 : 1;
		p++;
		if (!digits(&p, 2, &oh) || *p++ != ':' || !digits(&p, 2, &om))
			return false;
		if (oh > 23 || om > 59)
			return false;
	} else {
		return false;
	}
	if (*p != '\0' || mo < 1 || mo > 12 || d < 1 ||
	    d > billing_month_days(y, mo) || h > 23 || mi > 59 || sec > 59)
		return false;
	*ms = (billing_days_from_civil(y, mo, d) * BILLING_DAY_S + h * 3600 +
	       mi * 60 + sec - sign * (oh * 3600 + om * 60)) *
	              1000 +
	      frac;
	return true;
}

void
billing_format_time(int64_t ms, char out[32])
{
	int64_t s = floor_div(ms, 1000), days = floor_div(s, BILLING_DAY_S);
	int64_t rem = s - days * BILLING_DAY_S;
	int y, m, d;

	billing_civil_from_days(days, &y, &m, &d);
	// The modulos only bound the widths for the compiler; every field is
	// already in range (years past 9999 are not billing dates).
	snprintf(out, 32, "%04u-%02u-%02uT%02u:%02u:%02u.%03uZ",
	         (unsigned)y % 10000u, (unsigned)m % 100u, (unsigned)d % 100u,
	         (unsigned)(rem / 3600) % 100u,
	         (unsigned)(rem / 60 % 60) % 100u, (unsigned)(rem % 60) % 100u,
	         (unsigned)(ms - s * 1000) % 1000u);
}

int64_t
billing_now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

// parley-import legacy --source URL --tenant SLUG [options]: flags first,
// then the environment (PARLEY_<SVC>_URL, PARLEY_SERVICE_SECRET,
// PARLEY_IMPORT_*).
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "pl/log.h"
#include "import.h"

static void
usage(FILE *f)
{
	fprintf(f,
	        "usage: parley-import legacy --source <libpq URL> --tenant "
	        "<slug> "
	        "[options]\n"
	        "  --dry-run                read and check everything, write "
	        "nothing\n"
	        "  --report FILE            write the report as JSON\n"
	        "  --tenant-name NAME       for a new tenant (default: the "
	        "slug)\n"
	        "  --admin-email E --admin-password P --admin-name N\n"
	        "                           the new tenant's owner "
	        "(PARLEY_IMPORT_ADMIN_EMAIL/_PASSWORD)\n"
	        "  --tenants-url U --billing-url U --agents-url U "
	        "--messaging-url U\n"
	        "                           (PARLEY_TENANTS_URL etc.; secret "
	        "in "
	        "PARLEY_SERVICE_SECRET)\n"
	        "  --wa-phone-number-id ID --wa-access-token T --wa-app-secret "
	        "S\n"
	        "  --wa-verify-token V --wa-api-base-url U --wa-display-phone "
	        "P\n"
	        "                           WhatsApp credentials "
	        "(PARLEY_IMPORT_WA_*); none: a disabled channel\n"
	        "  --template-language L    campaigns' templates (default en)\n"
	        "  --close-idle-days N      close conversations idle longer "
	        "(default 0: all open)\n"
	        "  --batch N                rows per bulk call (default 1000)\n"
	        "  --quiet                  no progress lines\n");
}

static const char *
env(const char *name)
{
	const char *v = getenv(name);
	return v && v[0] ? v : NULL;
}

int
import_cli_main(int argc, char **argv)
{
	static const struct option longs[] = {
		{ "source", 1, 0, 's' },
		{ "tenant", 1, 0, 't' },
		{ "dry-run", 0, 0, 'n' },
		{ "report", 1, 0, 'r' },
		{ "tenant-name", 1, 0, 1 },
		{ "admin-email", 1, 0, 2 },
		{ "admin-password", 1, 0, 3 },
		{ "admin-name", 1, 0, 4 },
		{ "tenants-url", 1, 0, 5 },
		{ "billing-url", 1, 0, 6 },
		{ "agents-url", 1, 0, 7 },
		{ "messaging-url", 1, 0, 8 },
		{ "wa-phone-number-id", 1, 0, 9 },
		{ "wa-access-token", 1, 0, 10 },
		{ "wa-app-secret", 1, 0, 11 },
		{ "wa-verify-token", 1, 0, 12 },
		{ "wa-api-base-url", 1, 0, 13 },
		{ "wa-display-phone", 1, 0, 14 },
		{ "template-language", 1, 0, 15 },
		{ "close-idle-days", 1, 0, 16 },
		{ "batch", 1, 0, 17 },
		{ "quiet", 0, 0, 'q' },
		{ "help", 0, 0, 'h' },
		{ NULL, 0, 0, 0 },
	};
	imp_opts o = { 0 };
	imp_report r;
	char err[1024] = "";
	int c, rc;

	if (argc < 2 || strcmp(argv[1], "legacy") != 0) {
		usage(stderr);
		return 1;
	}
	if (sodium_init() < 0)
		return 1;
	pl_log_init("import", PL_LOG_WARN);
	o.tenants_url = env("PARLEY_TENANTS_URL");
	o.billing_url = env("PARLEY_BILLING_URL");
	o.agents_url = env("PARLEY_AGENTS_URL");
	o.messaging_url = env("PARLEY_MESSAGING_URL");
	o.secret = env("PARLEY_SERVICE_SECRET");
	o.admin_email = env("PARLEY_IMPORT_ADMIN_EMAIL");
	o.admin_password = env("PARLEY_IMPORT_ADMIN_PASSWORD");
	o.wa_phone_number_id = env("PARLEY_IMPORT_WA_PHONE_NUMBER_ID");
	o.wa_access_token = env("PARLEY_IMPORT_WA_ACCESS_TOKEN");
	o.wa_app_secret = env("PARLEY_IMPORT_WA_APP_SECRET");
	o.wa_verify_token = env("PARLEY_IMPORT_WA_VERIFY_TOKEN");
	o.wa_api_base_url = env("PARLEY_IMPORT_WA_API_BASE_URL");
	o.batch = 1000;
	o.out = stdout;
	optind = 2;
	while ((c = getopt_long(argc, argv, "s:t:nr:qh", longs, NULL)) != -1) {
		switch (c) {
		case 's':
			o.source_url = optarg;
			break;
		case 't':
			o.tenant_slug = optarg;
			break;
		case 'n':
			o.dry_run = true;
			break;
		case 'r':
			o.report_path = optarg;
			break;
		case 'q':
			o.quiet = true;
			break;
		case 1:
			o.tenant_name = optarg;
			break;
		case 2:
			o.admin_email = optarg;
			break;
		case 3:
			o.admin_password = optarg;
			break;
		case 4:
			o.admin_name = optarg;
			break;
		case 5:
			o.tenants_url = optarg;
			break;
		case 6:
			o.billing_url = optarg;
			break;
		case 7:
			o.agents_url = optarg;
			break;
		case 8:
			o.messaging_url = optarg;
			break;
		case 9:
			o.wa_phone_number_id = optarg;
			break;
		case 10:
			o.wa_access_token = optarg;
			break;
		case 11:
			o.wa_app_secret = optarg;
			break;
		case 12:
			o.wa_verify_token = optarg;
			break;
		case 13:
			o.wa_api_base_url = optarg;
			break;
		case 14:
			o.wa_display_phone = optarg;
			break;
		case 15:
			o.template_language = optarg;
			break;
		case 16:
			o.close_idle_days = strtoll(optarg, NULL, 10);
			break;
		case 17:
			o.batch = atoi(optarg);
			break;
		case 'h':
			usage(stdout);
			return 0;
		default:
			usage(stderr);
			return 1;
		}
	}
	if (o.source_url == NULL || o.tenant_slug == NULL) {
		fprintf(stderr, "parley-import: --source and --tenant are "
		                "required\n");
		usage(stderr);
		return 1;
	}
	if (o.batch < 1 || o.batch > 5000) {
		fprintf(stderr, "parley-import: --batch must be 1..5000\n");
		return 1;
	}
	rc = import_run(&o, &r, err, sizeof(err));
	if (rc == 1)
		fprintf(stderr, "parley-import: %s\n", err);
	import_report_fini(&r);
	return rc;
}

// The additive policy (DESIGN §4) over every service's migrations: each
// services/<svc>/migrations directory must load (strict names, no gaps) and
// pass pl_migrate_lint.
#include <dirent.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include <cmocka.h>

#include "pl/migrate.h"

static void
test_every_service_is_additive(void **state)
{
	(void)state;
	const char *services = PARLEY_SOURCE_DIR "/services";
	DIR *d = opendir(services);
	if (d == NULL) {
		print_message("no services directory: nothing to check\n");
		return;
	}
	int checked = 0, failed = 0;
	struct dirent *de;
	while ((de = readdir(d)) != NULL) {
		if (de->d_name[0] == '.')
			continue;
		char dir[4096];
		struct stat st;
		snprintf(dir, sizeof(dir), "%s/%s/migrations", services,
		         de->d_name);
		if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode))
			continue;
		pl_migration *m;
		size_t n;
		char err[512];
		if (pl_migrate_load_dir(dir, &m, &n, err, sizeof(err)) != 0) {
			print_error("%s: %s\n", de->d_name, err);
			failed++;
			continue;
		}
		if (pl_migrate_lint(m, n, err, sizeof(err)) != 0) {
			print_error("%s: %s\n", de->d_name, err);
			failed++;
		}
		pl_migrate_free(m, n);
		checked++;
	}
	closedir(d);
	print_message("checked %d migration directories\n", checked);
	assert_int_equal(failed, 0);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_every_service_is_additive),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}

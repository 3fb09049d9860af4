/*
 * unit_tap.h
 *		The TAP output of the C unit tests: check() prints "ok N - name" or
 *		"not ok N - name: detail"; tap_done() prints the plan and gives the
 *		exit status.  Header-only, one copy per test program.
 */
#ifndef APICOUNT_UNIT_TAP_H
#define APICOUNT_UNIT_TAP_H

#include <stdio.h>

static int	n_test = 0;
static int	n_fail = 0;

static void
check(int cond, const char *name, const char *detail)
{
	n_test++;
	if (cond)
		printf("ok %d - %s\n", n_test, name);
	else
	{
		n_fail++;
		printf("not ok %d - %s%s%s\n", n_test, name, detail ? ": " : "",
			   detail ? detail : "");
	}
}

static int
tap_done(void)
{
	printf("1..%d\n", n_test);
	return n_fail == 0 ? 0 : 1;
}

#endif

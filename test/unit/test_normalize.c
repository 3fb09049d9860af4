/*
 * test_normalize.c
 *		Unit tests for src/common/normalize.c, built without the server.
 *
 * Expected values are written out by hand from the rules in the README
 * (query/fragment stripped; all-digit, UUID and >= 16-hex segments become
 * :id; methods upper-cased HTTP tokens of at most 16 characters).
 * Prints TAP ("ok N - ..." / "not ok N - ...").
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "normalize.h"
#include "normalize_reference.h"
#include "unit_tap.h"

static void
path_case(const char *in, int normalize, NormResult want_r, const char *want)
{
	size_t		len = strlen(in);
	char	   *out = malloc(3 * len + 4);
	size_t		outlen = 0;
	NormResult	r = apicount_normalize_path(in, len, normalize, out, &outlen);
	char		name[512];
	char		detail[512];

	snprintf(name, sizeof(name), "path '%s'%s", in, normalize ? "" : " (raw)");
	snprintf(detail, sizeof(detail), "got r=%d '%.*s', want r=%d '%s'",
			 (int) r, (int) outlen, out, (int) want_r, want ? want : "");
	check(r == want_r && (want == NULL ||
						  (outlen == strlen(want) && memcmp(out, want, outlen) == 0)),
		  name, detail);
	free(out);
}

/* a random path from an alphabet rich in the bytes the rules look at */
static size_t
random_path(char *buf, size_t max)
{
	static const char alphabet[] = "//////0123456789abcdefABCDEF-x?#\t\x7f\xc3\xa9";
	size_t		len = (size_t) (rand() % (int) (max + 1));
	size_t		i;

	for (i = 0; i < len; i++)
	{
		/* runs of digits and hex make ids, including 16+ hex and UUIDs */
		if (rand() % 8 == 0 && i + 36 <= len)
		{
			memcpy(buf + i, "550e8400-e29b-41d4-a716-446655440000", 36);
			if (rand() % 4 == 0)
				buf[i + rand() % 36] = (char) alphabet[rand() % (int) (sizeof(alphabet) - 1)];
			i += 35;
		}
		else
			buf[i] = alphabet[rand() % (int) (sizeof(alphabet) - 1)];
	}
	return len;
}

/* the one-pass code against the plain rules, on random inputs */
static void
differential(int n)
{
	char		in[200];
	char		out[3 * sizeof(in) + 4];
	char		want[3 * sizeof(in) + 4];
	int			bad = 0;
	int			k;
	char		detail[1024] = "";

	srand(20261125);
	for (k = 0; k < n; k++)
	{
		size_t		len = random_path(in, sizeof(in));
		int			normalize = k % 4 != 0;
		size_t		outlen,
					wantlen;
		NormResult	r = apicount_normalize_path(in, len, normalize, out, &outlen);
		NormResult	w = ref_normalize_path(in, len, normalize, want, &wantlen);

		if (r != w || (r == NORM_OK && (outlen != wantlen ||
										memcmp(out, want, wantlen) != 0)))
		{
			if (bad++ == 0)
				snprintf(detail, sizeof(detail), "first difference: '%.*s' gave r=%d '%.*s', want r=%d '%.*s'",
						 (int) len, in, (int) r, (int) outlen, out, (int) w,
						 (int) wantlen, want);
		}
		if ((apicount_check_text(in, len) == NORM_OK) !=
			(ref_check_text(in, len) == NORM_OK) && bad++ == 0)
			snprintf(detail, sizeof(detail), "check_text differs on '%.*s'",
					 (int) len, in);
	}
	check(bad == 0, "normalize_path and check_text equal the plain rules on 200,000 random inputs",
		  detail);
}

static void
method_case(const char *in, NormResult want_r, const char *want)
{
	char		out[APICOUNT_MAX_METHOD + 1];
	size_t		outlen;
	NormResult	r = apicount_normalize_method(in, strlen(in), out, &outlen);
	char		name[128];

	snprintf(name, sizeof(name), "method '%s'", in);
	check(r == want_r && (want == NULL || strcmp(out, want) == 0), name, NULL);
}

int
main(void)
{
	/* query strings and fragments */
	path_case("/users?id=1", 1, NORM_OK, "/users");
	path_case("/users#top", 1, NORM_OK, "/users");
	path_case("/a?b#c", 1, NORM_OK, "/a");
	path_case("?x=1", 1, NORM_EMPTY, NULL);
	path_case("#frag", 1, NORM_EMPTY, NULL);
	path_case("", 1, NORM_EMPTY, NULL);

	/* id segments */
	path_case("/users/42", 1, NORM_OK, "/users/:id");
	path_case("/users/42/orders/7", 1, NORM_OK, "/users/:id/orders/:id");
	path_case("/users/42/", 1, NORM_OK, "/users/:id/");
	path_case("/u/550e8400-e29b-41d4-a716-446655440000", 1, NORM_OK, "/u/:id");
	path_case("/u/550E8400-E29B-41D4-A716-446655440000/x", 1, NORM_OK, "/u/:id/x");
	path_case("/u/550e8400e29b41d4a716446655440000", 1, NORM_OK, "/u/:id");
	path_case("/h/0123456789abcdef", 1, NORM_OK, "/h/:id");	/* 16 hex */
	path_case("/h/0123456789abcde", 1, NORM_OK, "/h/0123456789abcde");	/* 15 */
	path_case("/h/deadbeef", 1, NORM_OK, "/h/deadbeef");
	path_case("/v1/users", 1, NORM_OK, "/v1/users");
	path_case("/12a", 1, NORM_OK, "/12a");
	path_case("/550e8400-e29b-41d4-a716-44665544000g", 1, NORM_OK,
			  "/550e8400-e29b-41d4-a716-44665544000g");
	path_case("//", 1, NORM_OK, "//");
	path_case("/1/2/3", 1, NORM_OK, "/:id/:id/:id");
	path_case("7", 1, NORM_OK, ":id");

	/* raw mode keeps everything but still rejects control characters */
	path_case("/users/42?x=1", 0, NORM_OK, "/users/42?x=1");
	path_case("/a\tb", 1, NORM_CONTROL_CHAR, NULL);
	path_case("/a\x7f", 0, NORM_CONTROL_CHAR, NULL);
	path_case("/caf\xc3\xa9/42", 1, NORM_OK, "/caf\xc3\xa9/:id");

	/* methods */
	method_case("get", NORM_OK, "GET");
	method_case("Post", NORM_OK, "POST");
	method_case("M-SEARCH", NORM_OK, "M-SEARCH");
	method_case("", NORM_EMPTY, NULL);
	method_case("GE T", NORM_BAD_TOKEN, NULL);
	method_case("G(T", NORM_BAD_TOKEN, NULL);
	method_case("ABCDEFGHIJKLMNOP", NORM_OK, "ABCDEFGHIJKLMNOP");	/* 16 */
	method_case("ABCDEFGHIJKLMNOPQ", NORM_TOO_LONG, NULL);	/* 17 */
	method_case("g\xc3\xa9t", NORM_BAD_TOKEN, NULL);

	/* UTF-8 clipping never splits a character */
	{
		const char *s = "ab\xc3\xa9";	/* a b é (2 bytes) */

		check(apicount_clip_utf8(s, 4, 3) == 2, "clip before a 2-byte char", NULL);
		check(apicount_clip_utf8(s, 4, 4) == 4, "no clip when it fits", NULL);
		check(apicount_clip_utf8("\xe2\x82\xac\xe2\x82\xac", 6, 4) == 3,
			  "clip 3-byte chars at a boundary", NULL);
	}

	/* control characters at every position of an 8-byte word and its tail */
	{
		char		buf[24];
		int			pos,
					bad = 0;
		unsigned char ctl[] = {0x00, 0x01, 0x1f, 0x7f};
		size_t		c;

		for (c = 0; c < sizeof(ctl); c++)
			for (pos = 0; pos < 21; pos++)
			{
				memset(buf, 'a', sizeof(buf));
				buf[pos] = (char) ctl[c];
				if (apicount_check_text(buf, 21) != NORM_CONTROL_CHAR)
					bad++;
				buf[pos] = (char) (0x20 + pos);	/* no control byte at all */
				buf[(pos + 1) % 21] = (char) 0x80;
				if (apicount_check_text(buf, 21) != NORM_OK)
					bad++;
			}
		check(bad == 0, "check_text finds 0x00, 0x01, 0x1f and 0x7f at each of 21 positions, and passes 0x20..0x7e and 0x80",
			  NULL);
	}

	differential(200000);

	return tap_done();
}

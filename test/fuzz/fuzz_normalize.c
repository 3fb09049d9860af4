/*
 * fuzz_normalize.c
 *		libFuzzer harness over src/common/normalize.c (path and method rules).
 *
 * Built outside the server with clang -fsanitize=fuzzer,address,undefined.
 * Besides memory errors it checks the documented properties:
 *	- a normalized path holds no '?', '#' or control character, fits the
 *	  3 * len + 3 bound, and normalizing it again changes nothing;
 *	- raw mode returns the input unchanged (or rejects control characters);
 *	- every accepted method is 1..16 upper-case token characters;
 *	- UTF-8 clipping never exceeds the limit nor splits a character;
 *	- paths and text give what the plain rules of
 *	  test/unit/normalize_reference.h give.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "normalize.h"
#include "../unit/normalize_reference.h"

#define CHECK(cond) do { if (!(cond)) abort(); } while (0)

static int
is_tchar(unsigned char c)
{
	return (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		(c != '\0' && strchr("!#$%&'*+-.^_`|~", c) != NULL);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *in = (const char *) data;
	char	   *out = malloc(3 * size + 4);
	char	   *again = malloc(3 * (3 * size + 4) + 4);
	char		method[APICOUNT_MAX_METHOD + 1];
	size_t		outlen,
				againlen,
				mlen,
				i;
	NormResult	r;

	/* normalized paths */
	r = apicount_normalize_path(in, size, true, out, &outlen);
	if (r == NORM_OK)
	{
		CHECK(outlen > 0 && outlen <= 3 * size + 3);
		CHECK(out[outlen] == '\0');
		for (i = 0; i < outlen; i++)
		{
			unsigned char c = (unsigned char) out[i];

			CHECK(c != '?' && c != '#' && c >= 0x20 && c != 0x7f);
		}
		r = apicount_normalize_path(out, outlen, true, again, &againlen);
		CHECK(r == NORM_OK && againlen == outlen &&
			  memcmp(again, out, outlen) == 0);
	}
	else
		CHECK(r == NORM_EMPTY || r == NORM_CONTROL_CHAR);

	/* the same as the plain rules */
	{
		char	   *want = malloc(3 * size + 4);
		size_t		wantlen;
		NormResult	w;

		w = ref_normalize_path(in, size, 1, want, &wantlen);
		CHECK(w == r);
		if (r == NORM_OK)
			CHECK(wantlen == outlen && memcmp(want, out, outlen) == 0);
		w = ref_normalize_path(in, size, 0, want, &wantlen);
		CHECK(w == apicount_normalize_path(in, size, false, out, &outlen));
		CHECK((ref_check_text(in, size) == NORM_OK) ==
			  (apicount_check_text(in, size) == NORM_OK));
		free(want);
	}

	/* raw paths */
	r = apicount_normalize_path(in, size, false, out, &outlen);
	if (r == NORM_OK)
		CHECK(outlen == size && memcmp(out, in, size) == 0);
	else
		CHECK((r == NORM_EMPTY && size == 0) ||
			  (r == NORM_CONTROL_CHAR && apicount_check_text(in, size) != NORM_OK));

	/* methods */
	r = apicount_normalize_method(in, size, method, &mlen);
	if (r == NORM_OK)
	{
		CHECK(mlen >= 1 && mlen <= APICOUNT_MAX_METHOD && mlen == size);
		for (i = 0; i < mlen; i++)
			CHECK(is_tchar((unsigned char) method[i]));
	}
	else
		CHECK(size == 0 || size > APICOUNT_MAX_METHOD || r == NORM_BAD_TOKEN);

	/* clipping */
	{
		size_t		max = size ? data[0] % 64 : 0;
		size_t		n = apicount_clip_utf8(in, size, max);

		CHECK(n <= size);
		if (size > max)
		{
			CHECK(n <= max);
			CHECK(n == size || (((unsigned char) in[n]) & 0xC0) != 0x80 || n == 0);
		}
	}

	free(out);
	free(again);
	return 0;
}

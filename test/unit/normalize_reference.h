/*
 * normalize_reference.h
 *		The path and text rules of the README written the plain way, one
 *		rule per pass, as the oracle of the differential tests
 *		(test_normalize.c, test/fuzz/fuzz_normalize.c): src/common/normalize.c does
 *		the same in one pass and must give the same result for every input.
 *		Header-only, one copy per test program.
 */
#ifndef APICOUNT_NORMALIZE_REFERENCE_H
#define APICOUNT_NORMALIZE_REFERENCE_H

#include <string.h>

#include "normalize.h"

static int
ref_is_hex(unsigned char c)
{
	return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') ||
		(c >= 'A' && c <= 'F');
}

static int
ref_is_control(unsigned char c)
{
	return c < 0x20 || c == 0x7f;
}

/* an id: all digits; >= 16 hex digits; or a UUID (8-4-4-4-12 hex digits) */
static int
ref_is_id(const char *seg, size_t len)
{
	size_t		i;
	int			digits = 1;
	int			hex = 1;
	int			uuid = (len == 36);

	if (len == 0)
		return 0;
	for (i = 0; i < len; i++)
	{
		unsigned char c = (unsigned char) seg[i];
		int			dash_pos = (i == 8 || i == 13 || i == 18 || i == 23);

		if (!(c >= '0' && c <= '9'))
			digits = 0;
		if (!ref_is_hex(c))
			hex = 0;
		if (uuid && (dash_pos ? c != '-' : !ref_is_hex(c)))
			uuid = 0;
	}
	return digits || (hex && len >= 16) || uuid;
}

static NormResult
ref_check_text(const char *in, size_t len)
{
	size_t		i;

	for (i = 0; i < len; i++)
		if (ref_is_control((unsigned char) in[i]))
			return NORM_CONTROL_CHAR;
	return NORM_OK;
}

static NormResult
ref_normalize_path(const char *in, size_t len, int normalize, char *out,
				   size_t *outlen)
{
	size_t		i;
	size_t		o = 0;
	size_t		start = 0;

	*outlen = 0;
	/* 1. a control character anywhere is an error */
	if (ref_check_text(in, len) != NORM_OK)
		return NORM_CONTROL_CHAR;
	/* 2. raw mode: the path as sent */
	if (!normalize)
	{
		if (len == 0)
			return NORM_EMPTY;
		memcpy(out, in, len);
		*outlen = len;
		return NORM_OK;
	}
	/* 3. the query string and fragment go */
	for (i = 0; i < len && in[i] != '?' && in[i] != '#'; i++)
		;
	len = i;
	if (len == 0)
		return NORM_EMPTY;
	/* 4. each '/'-separated segment that is an id becomes ":id" */
	for (i = 0; i <= len; i++)
	{
		if (i < len && in[i] != '/')
			continue;
		if (ref_is_id(in + start, i - start))
		{
			memcpy(out + o, ":id", 3);
			o += 3;
		}
		else
		{
			memcpy(out + o, in + start, i - start);
			o += i - start;
		}
		if (i < len)
			out[o++] = '/';
		start = i + 1;
	}
	*outlen = o;
	return NORM_OK;
}

#endif

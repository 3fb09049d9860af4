/*-------------------------------------------------------------------------
 * normalize.c
 *		Path and method normalization and validation (pure C).
 *
 * Owns the rules that turn what an app sends into the key apicount counts:
 * query string and fragment stripped, id-like segments replaced by ":id",
 * methods upper-cased and checked against the HTTP token grammar.  Nothing
 * here allocates, throws or touches server state, so that the fuzzer in
 * test/fuzz and the unit tests can build this file alone.
 *-------------------------------------------------------------------------
 */
#include "normalize.h"

#include <string.h>

static bool
is_hex(unsigned char c)
{
	return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') ||
		(c >= 'A' && c <= 'F');
}

static bool
is_control(unsigned char c)
{
	return c < 0x20 || c == 0x7f;
}

bool
apicount_segment_is_id(const char *seg, size_t len)
{
	size_t		i;
	bool		digits = true;
	bool		hex = true;

	if (len == 0)
		return false;
	for (i = 0; i < len; i++)
	{
		unsigned char c = (unsigned char) seg[i];

		if (c < '0' || c > '9')
			digits = false;
		if (!is_hex(c))
			hex = false;
	}
	if (digits || (hex && len >= 16))
		return true;

	/* UUID: 8-4-4-4-12 hex digits */
	if (len == 36)
	{
		for (i = 0; i < 36; i++)
		{
			unsigned char c = (unsigned char) seg[i];

			if (i == 8 || i == 13 || i == 18 || i == 23)
			{
				if (c != '-')
					return false;
			}
			else if (!is_hex(c))
				return false;
		}
		return true;
	}
	return false;
}

NormResult
apicount_check_text(const char *in, size_t len)
{
	size_t		i;

	for (i = 0; i < len; i++)
		if (is_control((unsigned char) in[i]))
			return NORM_CONTROL_CHAR;
	return NORM_OK;
}

NormResult
apicount_normalize_path(const char *in, size_t len, bool normalize,
						char *out, size_t *outlen)
{
	size_t		i;
	size_t		o = 0;
	size_t		seg_start;

	*outlen = 0;
	out[0] = '\0';
	if (apicount_check_text(in, len) != NORM_OK)
		return NORM_CONTROL_CHAR;

	if (!normalize)
	{
		if (len == 0)
			return NORM_EMPTY;
		memcpy(out, in, len);
		out[len] = '\0';
		*outlen = len;
		return NORM_OK;
	}

	/* strip query string and fragment */
	for (i = 0; i < len; i++)
		if (in[i] == '?' || in[i] == '#')
			break;
	len = i;
	if (len == 0)
		return NORM_EMPTY;

	/* copy segment by segment, replacing id-like ones */
	seg_start = 0;
	for (i = 0; i <= len; i++)
	{
		if (i == len || in[i] == '/')
		{
			size_t		seglen = i - seg_start;

			if (apicount_segment_is_id(in + seg_start, seglen))
			{
				memcpy(out + o, ":id", 3);
				o += 3;
			}
			else
			{
				memcpy(out + o, in + seg_start, seglen);
				o += seglen;
			}
			if (i < len)
				out[o++] = '/';
			seg_start = i + 1;
		}
	}
	out[o] = '\0';
	*outlen = o;
	return NORM_OK;
}

NormResult
apicount_normalize_method(const char *in, size_t len, char *out,
						  size_t *outlen)
{
	size_t		i;

	*outlen = 0;
	out[0] = '\0';
	if (len == 0)
		return NORM_EMPTY;
	if (len > APICOUNT_MAX_METHOD)
		return NORM_TOO_LONG;
	for (i = 0; i < len; i++)
	{
		unsigned char c = (unsigned char) in[i];

		/* RFC 9110 tchar */
		if ((c >= 'a' && c <= 'z'))
			c = c - 'a' + 'A';
		else if (!((c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
				   strchr("!#$%&'*+-.^_`|~", c) != NULL) || c == '\0')
			return NORM_BAD_TOKEN;
		out[i] = (char) c;
	}
	out[len] = '\0';
	*outlen = len;
	return NORM_OK;
}

size_t
apicount_clip_utf8(const char *s, size_t len, size_t max)
{
	size_t		n;

	if (len <= max)
		return len;
	n = max;
	/* back up over continuation bytes (10xxxxxx) to a character start */
	while (n > 0 && (((unsigned char) s[n]) & 0xC0) == 0x80)
		n--;
	return n;
}

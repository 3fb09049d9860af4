/*-------------------------------------------------------------------------
 * normalize.c
 *		Path and method normalization and validation (pure C).
 *
 * Owns the rules that turn what an app sends into the key apicount counts:
 * query string and fragment stripped, id-like segments replaced by ":id",
 * methods upper-cased and checked against the HTTP token grammar.  A path
 * is read once, byte by byte through a class table; text is checked 8
 * bytes at a time.  Nothing here allocates, throws or touches server state
 * (the class table is filled on first use), so that the fuzzer in
 * test/fuzz and the unit tests can build this file alone; both compare it
 * with the plain rules of test/unit/normalize_reference.h.
 *-------------------------------------------------------------------------
 */
#include "normalize.h"

#include <stdint.h>
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

/*
 * Byte classes for the one-pass scans below (built on first use; this file
 * has no other state).  A path byte is copied unless it is a control
 * character, '?' or '#' (the path ends) or '/' (a segment ends); the
 * NOT_DIGIT and NOT_HEX bits of a segment's bytes are or-ed together to
 * decide whether the segment is an id.
 */
#define CLS_CONTROL		0x01
#define CLS_END			0x02
#define CLS_SLASH		0x04
#define CLS_NOT_DIGIT	0x08
#define CLS_NOT_HEX		0x10
#define CLS_SPECIAL		(CLS_CONTROL | CLS_END | CLS_SLASH)

static unsigned char byte_class[256];
static bool byte_class_ready = false;

static void
init_byte_class(void)
{
	int			c;

	for (c = 0; c < 256; c++)
	{
		unsigned char k = 0;

		if (is_control((unsigned char) c))
			k |= CLS_CONTROL;
		if (c == '?' || c == '#')
			k |= CLS_END;
		if (c == '/')
			k |= CLS_SLASH;
		if (c < '0' || c > '9')
			k |= CLS_NOT_DIGIT;
		if (!is_hex((unsigned char) c))
			k |= CLS_NOT_HEX;
		byte_class[c] = k;
	}
	byte_class_ready = true;
}

/* 8 bytes at a time: is any byte below 0x20 or equal to 0x7f? */
#define BYTES_ONES		UINT64_C(0x0101010101010101)
#define BYTES_HIGHS		UINT64_C(0x8080808080808080)

static inline bool
word_has_control(uint64_t x)
{
	uint64_t	below = (x - BYTES_ONES * 0x20) & ~x & BYTES_HIGHS;
	uint64_t	del = x ^ (BYTES_ONES * 0x7f);

	return ((below | ((del - BYTES_ONES) & ~del & BYTES_HIGHS)) != 0);
}

NormResult
apicount_check_text(const char *in, size_t len)
{
	size_t		i = 0;

	for (; i + 8 <= len; i += 8)
	{
		uint64_t	w;

		memcpy(&w, in + i, 8);
		if (word_has_control(w))
			return NORM_CONTROL_CHAR;
	}
	for (; i < len; i++)
		if (is_control((unsigned char) in[i]))
			return NORM_CONTROL_CHAR;
	return NORM_OK;
}

/*
 * Close the segment out[start .. *o): replace it with ":id" if it is an id.
 * cls holds the or-ed classes of its bytes.
 */
static inline void
end_segment(char *out, size_t start, size_t *o, unsigned char cls)
{
	size_t		seglen = *o - start;

	if (seglen == 0)
		return;
	if (!(cls & CLS_NOT_DIGIT) ||
		(!(cls & CLS_NOT_HEX) && seglen >= 16) ||
		(seglen == 36 && apicount_segment_is_id(out + start, seglen)))
	{
		memcpy(out + start, ":id", 3);
		*o = start + 3;
	}
}

/*
 * One pass: bytes are copied segment by segment and a segment found to be
 * an id is overwritten with ":id" at its end (out has room for the copy,
 * since out holds at least 3 * len + 4 bytes).  After a '?' or '#' the
 * rest is only checked for control characters.
 */
NormResult
apicount_normalize_path(const char *in, size_t len, bool normalize,
						char *out, size_t *outlen)
{
	const unsigned char *p = (const unsigned char *) in;
	size_t		i;
	size_t		o = 0;
	size_t		seg_start = 0;
	unsigned char seg_cls = 0;

	*outlen = 0;
	out[0] = '\0';

	if (!normalize)
	{
		if (apicount_check_text(in, len) != NORM_OK)
			return NORM_CONTROL_CHAR;
		if (len == 0)
			return NORM_EMPTY;
		memcpy(out, in, len);
		out[len] = '\0';
		*outlen = len;
		return NORM_OK;
	}

	if (!byte_class_ready)
		init_byte_class();
	for (i = 0; i < len; i++)
	{
		unsigned char k = byte_class[p[i]];

		if (k & CLS_SPECIAL)
		{
			if (k & CLS_CONTROL)
				return NORM_CONTROL_CHAR;
			if (k & CLS_END)
			{
				if (apicount_check_text(in + i + 1, len - i - 1) != NORM_OK)
					return NORM_CONTROL_CHAR;
				break;
			}
			/* '/' */
			end_segment(out, seg_start, &o, seg_cls);
			out[o++] = '/';
			seg_start = o;
			seg_cls = 0;
			continue;
		}
		seg_cls |= k;
		out[o++] = (char) p[i];
	}
	if (i == 0)
		return NORM_EMPTY;
	end_segment(out, seg_start, &o, seg_cls);
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

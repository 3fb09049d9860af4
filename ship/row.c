/*
 * row.c — apicount's validation of a record, and its COPY text row.
 *
 * Owns the rule that a line apicount would refuse is rejected here, so that
 * one bad line never fails a batch: the method and path go through the
 * extension's own src/common/normalize.c, strings must be UTF-8 without control
 * characters, the status 100..599, the latency 0..86,400,000 ms, the time
 * within the retention and at most 5 minutes ahead.  A client address that
 * is not an IP address (Apache with HostnameLookups) is sent as NULL.
 */
#include <arpa/inet.h>
#include <stdio.h>

#include "normalize.h"
#include "row.h"

bool
utf8_valid(const char *s, size_t len)
{
	const unsigned char *p = (const unsigned char *) s;
	size_t		i = 0;

	while (i < len)
	{
		unsigned char c = p[i];
		int			n;
		unsigned	cp;

		if (c < 0x80)
		{
			i++;
			continue;
		}
		if (c >= 0xC2 && c <= 0xDF)
			n = 1, cp = c & 0x1F;
		else if (c >= 0xE0 && c <= 0xEF)
			n = 2, cp = c & 0x0F;
		else if (c >= 0xF0 && c <= 0xF4)
			n = 3, cp = c & 0x07;
		else
			return false;
		if (i + n >= len + 1)
			return false;
		for (int k = 1; k <= n; k++)
		{
			if ((p[i + k] & 0xC0) != 0x80)
				return false;
			cp = (cp << 6) | (p[i + k] & 0x3F);
		}
		if ((n == 2 && cp < 0x800) || (n == 3 && (cp < 0x10000 || cp > 0x10FFFF)) ||
			(cp >= 0xD800 && cp <= 0xDFFF))
			return false;
		i += n + 1;
	}
	return true;
}

ParseError
row_check(const LogRecord *rec, const RowRules *rules)
{
	char		method[APICOUNT_MAX_METHOD + 1];
	char		pathbuf[3 * 512 + 4];
	size_t		outlen;
	NormResult	r;

	if (rec->ts_us < rules->oldest_us)
		return "time older than apicount.retention";
	if (rec->ts_us > rules->newest_us)
		return "time too far in the future";
	if (rec->method.len > APICOUNT_MAX_METHOD)
		return "method too long";
	r = apicount_normalize_method(rec->method.p, rec->method.len, method, &outlen);
	if (r != NORM_OK)
		return "method is not an HTTP token";
	if (!utf8_valid(rec->path.p, rec->path.len))
		return "path is not UTF-8";
	/* only the validation needs the whole path: check a long one in place */
	if (rec->path.len <= 512)
		r = apicount_normalize_path(rec->path.p, rec->path.len, rules->normalize != 0,
									pathbuf, &outlen);
	else
	{
		r = apicount_check_text(rec->path.p, rec->path.len);
		if (r == NORM_OK && (rec->path.p[0] == '?' || rec->path.p[0] == '#') &&
			rules->normalize)
			r = NORM_EMPTY;
	}
	if (r == NORM_EMPTY)
		return "empty path";
	if (r != NORM_OK)
		return "control character in path";
	if (rec->user.p != NULL)
	{
		if (!utf8_valid(rec->user.p, rec->user.len))
			return "user is not UTF-8";
		if (apicount_check_text(rec->user.p, rec->user.len) != NORM_OK)
			return "control character in user";
	}
	if (rec->status < 100 || rec->status > 599)
		return "status out of range";
	if (rec->has_latency && !(rec->latency_ms >= 0 && rec->latency_ms <= 86400000.0))
		return "request time out of range";
	return NULL;
}

/* a text column: backslashes doubled (control characters were refused) */
static void
put_text(Buf *b, Span s)
{
	size_t		i;

	if (s.p == NULL)
	{
		buf_append(b, "\\N", 2);
		return;
	}
	buf_reserve(b, 2 * s.len);
	for (i = 0; i < s.len; i++)
	{
		if (s.p[i] == '\\')
			b->data[b->len++] = '\\';
		b->data[b->len++] = s.p[i];
	}
}

static void
put_ip(Buf *b, Span s)
{
	char		tmp[64];
	unsigned char addr[16];

	if (s.p == NULL || s.len >= sizeof(tmp) || memchr(s.p, '\0', s.len) != NULL)
	{
		buf_append(b, "\\N", 2);
		return;
	}
	memcpy(tmp, s.p, s.len);
	tmp[s.len] = '\0';
	if (inet_pton(AF_INET, tmp, addr) == 1 || inet_pton(AF_INET6, tmp, addr) == 1)
		buf_append(b, tmp, s.len);
	else
		buf_append(b, "\\N", 2);
}

void
row_append(Buf *b, const LogRecord *rec)
{
	char		tmp[96];
	int64_t		secs = rec->ts_us / 1000000;
	int64_t		us = rec->ts_us % 1000000;
	int64_t		days, z, era, y;
	unsigned	doe, yoe, doy, mp, d, m, sod;
	int			n;

	if (us < 0)
	{
		us += 1000000;
		secs--;
	}
	days = secs / 86400;
	if (secs % 86400 < 0)
		days--;
	sod = (unsigned) (secs - days * 86400);
	/* civil_from_days (H. Hinnant) */
	z = days + 719468;
	era = (z >= 0 ? z : z - 146096) / 146097;
	doe = (unsigned) (z - era * 146097);
	yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
	y = (int64_t) yoe + era * 400;
	doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
	mp = (5 * doy + 2) / 153;
	d = doy - (153 * mp + 2) / 5 + 1;
	m = mp < 10 ? mp + 3 : mp - 9;
	y += m <= 2;
	n = snprintf(tmp, sizeof(tmp), "%04lld-%02u-%02u %02u:%02u:%02u.%06lld+00\t",
				 (long long) y, m, d, sod / 3600, sod / 60 % 60, sod % 60,
				 (long long) us);
	buf_append(b, tmp, n);
	put_text(b, rec->method);
	buf_putc(b, '\t');
	put_text(b, rec->path);
	buf_putc(b, '\t');
	put_ip(b, rec->client);
	buf_putc(b, '\t');
	put_text(b, rec->user);
	n = snprintf(tmp, sizeof(tmp), "\t%d\t", rec->status);
	buf_append(b, tmp, n);
	if (rec->has_latency)
	{
		n = snprintf(tmp, sizeof(tmp), "%.3f\n", rec->latency_ms);
		buf_append(b, tmp, n);
	}
	else
		buf_append(b, "\\N\n", 3);
}

/*
 * parse_combined.c — hand-written parser of the combined log format.
 *
 * Owns: %h %l %u [%t] "%r" %>s %b, optionally "%{Referer}i" "%{User-agent}i",
 * optionally one trailing request time in seconds (nginx $request_time).
 * Quoted fields may hold backslash escapes (Apache's \" and \\, nginx's \xHH):
 * a backslash always escapes the next byte.  Any bytes are safe to feed in
 * (fuzzed by test/fuzz/fuzz_ship.c); the record's strings point into the line.
 */
#include <string.h>

#include "parse_combined.h"

static const char *const months[12] = {
	"Jan", "Feb", "Mar", "Apr", "May", "Jun",
	"Jul", "Aug", "Sep", "Oct", "Nov", "Dec"
};

static bool
digits(const char *s, int n, int *out)
{
	int			v = 0;
	int			i;

	for (i = 0; i < n; i++)
	{
		if (s[i] < '0' || s[i] > '9')
			return false;
		v = v * 10 + (s[i] - '0');
	}
	*out = v;
	return true;
}

bool
parse_clf_time(const char *s, size_t len, int64_t *ts_us)
{
	int			d, y, hh, mm, ss, zh, zm;
	int			mon = -1;
	int			i;
	int64_t		secs;

	/* 10/Oct/2000:13:55:36 -0700 */
	if (len != 26 || s[2] != '/' || s[6] != '/' || s[11] != ':' ||
		s[14] != ':' || s[17] != ':' || s[20] != ' ' ||
		(s[21] != '+' && s[21] != '-'))
		return false;
	for (i = 0; i < 12; i++)
		if (memcmp(s + 3, months[i], 3) == 0)
			mon = i + 1;
	if (mon < 0 || !digits(s, 2, &d) || !digits(s + 7, 4, &y) ||
		!digits(s + 12, 2, &hh) || !digits(s + 15, 2, &mm) ||
		!digits(s + 18, 2, &ss) || !digits(s + 22, 2, &zh) ||
		!digits(s + 24, 2, &zm))
		return false;
	if (d < 1 || d > 31 || hh > 23 || mm > 59 || ss > 60 || zh > 23 || zm > 59)
		return false;
	secs = days_from_civil(y, (unsigned) mon, (unsigned) d) * 86400 +
		hh * 3600 + mm * 60 + ss;
	secs -= (s[21] == '-' ? -1 : 1) * (zh * 3600 + zm * 60);
	*ts_us = secs * 1000000;
	return true;
}

/* a field up to the next space (or the end); *pos moves past the space */
static Span
token(const char *line, size_t len, size_t *pos)
{
	Span		t;
	size_t		i = *pos;

	t.p = line + i;
	while (i < len && line[i] != ' ')
		i++;
	t.len = line + i - t.p;
	*pos = i < len ? i + 1 : i;
	return t;
}

/* a quoted field "..."; false when it does not close before the end */
static bool
quoted(const char *line, size_t len, size_t *pos, Span *out)
{
	size_t		i = *pos;

	if (i >= len || line[i] != '"')
		return false;
	i++;
	out->p = line + i;
	while (i < len && line[i] != '"')
	{
		if (line[i] == '\\')
			i++;
		i++;
	}
	if (i >= len)
		return false;
	out->len = line + i - out->p;
	i++;						/* the closing quote */
	if (i < len)
	{
		if (line[i] != ' ')
			return false;
		i++;
	}
	*pos = i;
	return true;
}

/* a non-negative decimal number of seconds, as nginx writes $request_time */
static bool
seconds(Span t, double *ms)
{
	double		v = 0;
	double		scale = 0;
	size_t		i;
	bool		any = false;

	for (i = 0; i < t.len; i++)
	{
		char		c = t.p[i];

		if (c >= '0' && c <= '9')
		{
			any = true;
			if (scale == 0)
				v = v * 10 + (c - '0');
			else
			{
				v += (c - '0') * scale;
				scale /= 10;
			}
		}
		else if (c == '.' && scale == 0)
			scale = 0.1;
		else
			return false;
		if (v > 1e9)
			return false;
	}
	*ms = v * 1000.0;
	return any;
}

ParseError
parse_combined(const char *line, size_t len, LogRecord *rec)
{
	size_t		pos = 0;
	Span		ident, user, req, t, status, bytes, referer, agent;
	size_t		i;

	memset(rec, 0, sizeof(*rec));
	if (len > 0 && line[len - 1] == '\r')
		len--;
	rec->client = token(line, len, &pos);
	if (rec->client.len == 0)
		return "no client address";
	ident = token(line, len, &pos);
	user = token(line, len, &pos);
	if (ident.len == 0 || user.len == 0)
		return "no ident or user field";
	if (!(user.len == 1 && user.p[0] == '-'))
		rec->user = user;

	/* [time] */
	if (pos >= len || line[pos] != '[')
		return "no [time]";
	t.p = line + pos + 1;
	for (i = pos + 1; i < len && line[i] != ']'; i++)
		;
	if (i >= len)
		return "no [time]";
	t.len = line + i - t.p;
	if (!parse_clf_time(t.p, t.len, &rec->ts_us))
		return "bad [time]";
	pos = i + 1;
	if (pos >= len || line[pos] != ' ')
		return "no request";
	pos++;

	/* "METHOD TARGET PROTOCOL" */
	if (!quoted(line, len, &pos, &req))
		return "bad quoted request";
	for (i = 0; i < req.len && req.p[i] != ' '; i++)
		;
	if (i == 0 || i == req.len)
		return "malformed request line";
	rec->method.p = req.p;
	rec->method.len = i;
	rec->path.p = req.p + i + 1;
	for (i = 0; i < (size_t) (req.p + req.len - rec->path.p) && rec->path.p[i] != ' '; i++)
		;
	rec->path.len = i;
	if (rec->path.len == 0)
		return "malformed request line";

	status = token(line, len, &pos);
	if (status.len != 3 || !digits(status.p, 3, &rec->status))
		return "bad status";
	bytes = token(line, len, &pos);
	if (bytes.len == 0)
		return "no bytes field";
	for (i = 0; i < bytes.len; i++)
		if (!((bytes.p[i] >= '0' && bytes.p[i] <= '9') ||
			  (bytes.len == 1 && bytes.p[i] == '-')))
			return "bad bytes field";
	if (pos >= len)
		return NULL;			/* common format */

	if (!quoted(line, len, &pos, &referer) || !quoted(line, len, &pos, &agent))
		return "bad referer or user agent";
	if (pos >= len)
		return NULL;			/* combined */

	/* the request time, in seconds */
	t = token(line, len, &pos);
	if (pos < len)
		return "unexpected fields after the request time";
	if (t.len == 1 && t.p[0] == '-')
		return NULL;
	if (!seconds(t, &rec->latency_ms))
		return "bad request time";
	rec->has_latency = true;
	return NULL;
}

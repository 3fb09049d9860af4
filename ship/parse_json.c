/*
 * parse_json.c — JSON lines, through yajl's event parser (Debian libyajl).
 *
 * Owns the mapping of one object's top-level keys to a record: the keys are
 * set by --field (defaults: time, remote_addr, remote_user, method, uri,
 * status, request_time).  Values of other keys, and nested values, are
 * skipped.  time is a number of seconds since 1970 ($msec), an ISO 8601
 * string ($time_iso8601) or a combined-format time ($time_local).  yajl
 * validates UTF-8; strings are copied to a scratch buffer as yajl decodes
 * them.  Any bytes are safe to feed in (fuzzed by test/fuzz/fuzz_ship.c).
 */
#include <stdlib.h>
#include <string.h>

#include <yajl/yajl_parse.h>

#include "parse_combined.h"
#include "parse_json.h"

static const char *const default_keys[JF_COUNT] = {
	"time", "remote_addr", "remote_user", "method", "uri", "status",
	"request_time"
};
static const char *const field_names[JF_COUNT] = {
	"time", "client", "user", "method", "path", "status", "request_time"
};

void
json_format_init(JsonFormat *f)
{
	int			i;

	memset(f, 0, sizeof(*f));
	for (i = 0; i < JF_COUNT; i++)
		f->field[i] = default_keys[i];
}

bool
json_format_set(JsonFormat *f, const char *assignment)
{
	const char *eq = strchr(assignment, '=');
	int			i;

	if (eq == NULL || eq[1] == '\0')
		return false;
	for (i = 0; i < JF_COUNT; i++)
		if (strlen(field_names[i]) == (size_t) (eq - assignment) &&
			memcmp(field_names[i], assignment, eq - assignment) == 0)
		{
			f->field[i] = eq + 1;
			return true;
		}
	return false;
}

/* a field's value: a string or a number's text; kind 0 when absent */
typedef struct JsonValue
{
	int			kind;			/* 0 absent, 1 string, 2 number, 3 other */
	const char *p;
	size_t		len;
} JsonValue;

typedef struct ParseState
{
	JsonFormat *f;
	int			depth;
	int			current;		/* the field of the key just read, or -1 */
	size_t		used;			/* of f->scratch */
	JsonValue	v[JF_COUNT];
} ParseState;

static int
on_map_key(void *ctx, const unsigned char *key, size_t len)
{
	ParseState *st = ctx;
	int			i;

	st->current = -1;
	if (st->depth != 1)
		return 1;
	for (i = 0; i < JF_COUNT; i++)
		if (strlen(st->f->field[i]) == len &&
			memcmp(st->f->field[i], key, len) == 0)
			st->current = i;
	return 1;
}

static int
set_value(ParseState *st, int kind, const unsigned char *s, size_t len)
{
	if (st->depth == 1 && st->current >= 0)
	{
		char	   *dst = st->f->scratch + st->used;

		/* decoded strings are never longer than the line (cap) */
		if (st->used + len > st->f->cap)
			return 0;
		if (len > 0)
			memcpy(dst, s, len);
		st->used += len;
		st->v[st->current].kind = kind;
		st->v[st->current].p = dst;
		st->v[st->current].len = len;
	}
	st->current = -1;
	return 1;
}

static int
on_string(void *ctx, const unsigned char *s, size_t len)
{
	return set_value(ctx, 1, s, len);
}

static int
on_number(void *ctx, const char *s, size_t len)
{
	return set_value(ctx, 2, (const unsigned char *) s, len);
}

static int
on_null(void *ctx)
{
	return set_value(ctx, 0, NULL, 0);
}

static int
on_boolean(void *ctx, int b)
{
	(void) b;
	return set_value(ctx, 3, NULL, 0);
}

static int
on_start(void *ctx)
{
	ParseState *st = ctx;

	if (st->depth == 1 && st->current >= 0)
		st->v[st->current].kind = 3;	/* an object or array: not usable */
	st->current = -1;
	if (st->depth >= 64)
		return 0;
	st->depth++;
	return 1;
}

static int
on_end(void *ctx)
{
	ParseState *st = ctx;

	st->depth--;
	return 1;
}

static int
on_start_map(void *ctx)
{
	ParseState *st = ctx;

	if (st->depth == 0)
	{
		st->depth = 1;
		return 1;
	}
	return on_start(ctx);
}

static int
on_start_array(void *ctx)
{
	ParseState *st = ctx;

	if (st->depth == 0)
		return 0;				/* the line must be an object */
	return on_start(ctx);
}

static const yajl_callbacks callbacks = {
	on_null, on_boolean, NULL, NULL, on_number, on_string,
	on_start_map, on_map_key, on_end, on_start_array, on_end
};

static bool
two(const char *s, int *v)
{
	if (s[0] < '0' || s[0] > '9' || s[1] < '0' || s[1] > '9')
		return false;
	*v = (s[0] - '0') * 10 + (s[1] - '0');
	return true;
}

bool
parse_iso_time(const char *s, size_t len, int64_t *ts_us)
{
	int			y1, y2, mo, d, hh, mm, ss;
	int64_t		us = 0;
	size_t		i = 19;
	int			zh = 0, zm = 0, sign = 1;

	/* 2024-05-01T12:00:00[.fff](Z|+HH:MM|+HHMM) */
	if (len < 20 || s[4] != '-' || s[7] != '-' || (s[10] != 'T' && s[10] != ' ') ||
		s[13] != ':' || s[16] != ':' ||
		!two(s, &y1) || !two(s + 2, &y2) || !two(s + 5, &mo) ||
		!two(s + 8, &d) || !two(s + 11, &hh) || !two(s + 14, &mm) ||
		!two(s + 17, &ss))
		return false;
	if (mo < 1 || mo > 12 || d < 1 || d > 31 || hh > 23 || mm > 59 || ss > 60)
		return false;
	if (s[i] == '.')
	{
		int64_t		scale = 100000;

		i++;
		if (i >= len || s[i] < '0' || s[i] > '9')
			return false;
		while (i < len && s[i] >= '0' && s[i] <= '9')
		{
			us += (s[i] - '0') * scale;
			scale /= 10;
			i++;
		}
	}
	if (i < len && s[i] == 'Z' && i + 1 == len)
		;
	else if (i < len && (s[i] == '+' || s[i] == '-'))
	{
		sign = s[i] == '-' ? -1 : 1;
		if (i + 6 == len && s[i + 3] == ':' && two(s + i + 1, &zh) &&
			two(s + i + 4, &zm))
			;
		else if (i + 5 == len && two(s + i + 1, &zh) && two(s + i + 3, &zm))
			;
		else
			return false;
		if (zh > 23 || zm > 59)
			return false;
	}
	else
		return false;
	*ts_us = ((days_from_civil(y1 * 100 + y2, (unsigned) mo, (unsigned) d) * 86400 +
			   hh * 3600 + mm * 60 + ss) - sign * (zh * 3600 + zm * 60)) * 1000000 + us;
	return true;
}

/* decimal seconds ("1714564800.123", "0.004") -> microseconds, or -1 */
static int64_t
decimal_us(const char *s, size_t len)
{
	int64_t		whole = 0;
	int64_t		frac = 0;
	int64_t		scale = 100000;
	size_t		i = 0;
	bool		any = false;

	for (; i < len && s[i] >= '0' && s[i] <= '9'; i++)
	{
		if (whole > 100000000000LL)
			return -1;
		whole = whole * 10 + (s[i] - '0');
		any = true;
	}
	if (i < len && s[i] == '.')
	{
		for (i++; i < len && s[i] >= '0' && s[i] <= '9'; i++)
		{
			frac += (s[i] - '0') * scale;
			scale /= 10;
			any = true;
		}
	}
	if (i != len || !any)
		return -1;
	return whole * 1000000 + frac;
}

static Span
span_of(const JsonValue *v)
{
	Span		s = {NULL, 0};

	if (v->kind == 1 && !(v->len == 0 || (v->len == 1 && v->p[0] == '-')))
	{
		s.p = v->p;
		s.len = v->len;
	}
	return s;
}

ParseError
parse_json(JsonFormat *f, const char *line, size_t len, LogRecord *rec)
{
	ParseState	st;
	yajl_handle h;
	yajl_status rc;
	JsonValue  *v;
	int64_t		us;

	memset(rec, 0, sizeof(*rec));
	if (f->cap < len)
	{
		free(f->scratch);
		f->cap = len < 4096 ? 4096 : len;
		f->scratch = malloc(f->cap);
		if (f->scratch == NULL)
		{
			f->cap = 0;
			return "out of memory";
		}
	}
	memset(&st, 0, sizeof(st));
	st.f = f;
	st.current = -1;
	h = yajl_alloc(&callbacks, NULL, &st);
	if (h == NULL)
		return "out of memory";
	rc = yajl_parse(h, (const unsigned char *) line, len);
	if (rc == yajl_status_ok)
		rc = yajl_complete_parse(h);
	yajl_free(h);
	if (rc != yajl_status_ok)
		return "not a JSON object";
	v = st.v;

	/* time */
	if (v[JF_TIME].kind == 2 ||
		(v[JF_TIME].kind == 1 && decimal_us(v[JF_TIME].p, v[JF_TIME].len) >= 0))
	{
		if ((rec->ts_us = decimal_us(v[JF_TIME].p, v[JF_TIME].len)) < 0)
			return "bad time";
	}
	else if (v[JF_TIME].kind == 1)
	{
		if (!parse_iso_time(v[JF_TIME].p, v[JF_TIME].len, &rec->ts_us) &&
			!parse_clf_time(v[JF_TIME].p, v[JF_TIME].len, &rec->ts_us))
			return "bad time";
	}
	else
		return "no time";

	rec->method = span_of(&v[JF_METHOD]);
	if (rec->method.p == NULL)
		return "no method";
	rec->path = span_of(&v[JF_PATH]);
	if (rec->path.p == NULL)
		return "no path";
	rec->client = span_of(&v[JF_CLIENT]);
	rec->user = span_of(&v[JF_USER]);

	/* status: a number or a string of 3 digits */
	if ((v[JF_STATUS].kind != 1 && v[JF_STATUS].kind != 2) ||
		v[JF_STATUS].len != 3 ||
		(us = decimal_us(v[JF_STATUS].p, 3)) < 0)
		return "bad status";
	rec->status = (int) (us / 1000000);

	/* request time in seconds; absent, null, "" or "-" is none */
	if (v[JF_REQUEST_TIME].kind == 2 ||
		(v[JF_REQUEST_TIME].kind == 1 && span_of(&v[JF_REQUEST_TIME]).p != NULL))
	{
		us = decimal_us(v[JF_REQUEST_TIME].p, v[JF_REQUEST_TIME].len);
		if (us < 0)
			return "bad request time";
		rec->has_latency = true;
		rec->latency_ms = us / 1000.0;
	}
	else if (v[JF_REQUEST_TIME].kind == 3)
		return "bad request time";
	return NULL;
}

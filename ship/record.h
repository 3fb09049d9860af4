/*
 * record.h — one access log line, parsed: the fields apicount.requests takes.
 *
 * Owns the record shared by the parsers (parse_combined.c, parse_json.c) and
 * the row writer (row.c).  Strings point into the line or into the parser's
 * scratch buffer; nothing is allocated per record.
 */
#ifndef SHIP_RECORD_H
#define SHIP_RECORD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct Span
{
	const char *p;				/* NULL: absent */
	size_t		len;
} Span;

typedef struct LogRecord
{
	int64_t		ts_us;			/* Unix time, microseconds */
	Span		method;
	Span		path;
	Span		client;			/* client address as written */
	Span		user;			/* absent for "-" and "" */
	int			status;
	bool		has_latency;
	double		latency_ms;
} LogRecord;

/* why a line was not counted: a static string, or NULL when it parsed */
typedef const char *ParseError;

/* days since 1970-01-01 of a proleptic Gregorian date */
static inline int64_t
days_from_civil(int64_t y, unsigned m, unsigned d)
{
	int64_t		era;
	unsigned	yoe, doy, doe;

	y -= m <= 2;
	era = (y >= 0 ? y : y - 399) / 400;
	yoe = (unsigned) (y - era * 400);
	doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
	doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
	return era * 146097 + (int64_t) doe - 719468;
}

#endif

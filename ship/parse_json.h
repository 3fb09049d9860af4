/*
 * parse_json.h — one JSON object per line (nginx log_format ... escape=json).
 */
#ifndef SHIP_PARSE_JSON_H
#define SHIP_PARSE_JSON_H

#include "record.h"

enum
{
	JF_TIME, JF_CLIENT, JF_USER, JF_METHOD, JF_PATH, JF_STATUS, JF_REQUEST_TIME,
	JF_COUNT
};

typedef struct JsonFormat
{
	const char *field[JF_COUNT];	/* the JSON key of each field */
	char	   *scratch;		/* decoded strings of the current line */
	size_t		cap;
} JsonFormat;

/* the defaults of the nginx log_format in the README */
extern void json_format_init(JsonFormat *f);

/* name=key for one field, as --field gives it; false when name is unknown */
extern bool json_format_set(JsonFormat *f, const char *assignment);

/*
 * Parse one line (without its newline).  Returns NULL and fills rec, or
 * the reason the line is bad.  rec's strings point into f->scratch, valid
 * until the next call.
 */
extern ParseError parse_json(JsonFormat *f, const char *line, size_t len,
							 LogRecord *rec);

/* ISO 8601 with an offset or Z ($time_iso8601) -> Unix microseconds */
extern bool parse_iso_time(const char *s, size_t len, int64_t *ts_us);

#endif

/*
 * row.h — checks a parsed record against apicount's validation rules and
 * writes it as a row of COPY apicount.requests (FORMAT text).
 */
#ifndef SHIP_ROW_H
#define SHIP_ROW_H

#include "buf.h"
#include "record.h"

/* the columns row_append writes, in order */
#define ROW_COLUMNS "ts, method, path, client_ip, user_id, status, latency_ms"

typedef struct RowRules
{
	int64_t		oldest_us;		/* older: apicount would refuse (retention) */
	int64_t		newest_us;		/* newer: too far in the future */
	int			normalize;		/* apicount.normalize_paths */
} RowRules;

/* NULL when apicount takes the record, else why it would refuse it */
extern ParseError row_check(const LogRecord *rec, const RowRules *rules);

/* the record as one COPY text row, with its newline */
extern void row_append(Buf *b, const LogRecord *rec);

extern bool utf8_valid(const char *s, size_t len);

#endif

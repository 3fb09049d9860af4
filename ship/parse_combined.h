/*
 * parse_combined.h — the Apache/nginx combined (and common) log format.
 */
#ifndef SHIP_PARSE_COMBINED_H
#define SHIP_PARSE_COMBINED_H

#include "record.h"

/*
 * Parse one line (without its newline).  Returns NULL and fills rec, or
 * the reason the line is bad.  rec's strings point into line.
 */
extern ParseError parse_combined(const char *line, size_t len, LogRecord *rec);

/* "10/Oct/2000:13:55:36 -0700" -> Unix microseconds; false when malformed */
extern bool parse_clf_time(const char *s, size_t len, int64_t *ts_us);

#endif

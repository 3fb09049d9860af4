/*
 * test_ship_parsers.c
 *		Unit tests of apicount-ship's parsers and row writer (ship/parse_*.c,
 *		ship/row.c): fields, times (expected epochs from date(1)), escapes,
 *		bad lines, and the COPY text of a row.
 */
#define _GNU_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "parse_combined.h"
#include "parse_json.h"
#include "row.h"
#include "unit_tap.h"

static int
span_is(Span s, const char *want)
{
	if (want == NULL)
		return s.p == NULL;
	return s.p != NULL && s.len == strlen(want) && memcmp(s.p, want, s.len) == 0;
}

static ParseError
comb(const char *line, LogRecord *r)
{
	return parse_combined(line, strlen(line), r);
}

static ParseError
js(JsonFormat *f, const char *line, LogRecord *r)
{
	return parse_json(f, line, strlen(line), r);
}

int
main(void)
{
	LogRecord	r;
	JsonFormat	jf;
	ParseError	e;
	int64_t		ts;
	RowRules	rules = {0, INT64_MAX, 1};
	Buf			b = {0};
	char		row[512];

	/* combined: Apache's documented example line, plus nginx's request time */
	e = comb("127.0.0.1 - frank [10/Oct/2000:13:55:36 -0700] \"GET /apache_pb.gif HTTP/1.0\" 200 2326 \"http://www.example.com/start.html\" \"Mozilla/4.08 [en] (Win98; I ;Nav)\"", &r);
	check(e == NULL, "combined: Apache's example parses", e);
	check(r.ts_us == 971211336LL * 1000000, "combined: time with a negative offset", NULL);
	check(span_is(r.method, "GET") && span_is(r.path, "/apache_pb.gif"), "combined: method and path", NULL);
	check(span_is(r.client, "127.0.0.1") && span_is(r.user, "frank"), "combined: client and user", NULL);
	check(r.status == 200 && !r.has_latency, "combined: status, no request time", NULL);

	e = comb("::1 - - [29/Feb/2024:23:59:59 +0530] \"POST /api/v1/x?y=\\\"z\\\" HTTP/1.1\" 503 0 \"-\" \"curl/8\" 0.125", &r);
	check(e == NULL, "combined: nginx line with $request_time", e);
	check(r.ts_us == 1709231399LL * 1000000, "combined: leap day, positive offset", NULL);
	check(r.has_latency && r.latency_ms == 125.0, "combined: request time in ms", NULL);
	check(r.user.p == NULL, "combined: '-' user is absent", NULL);
	check(span_is(r.path, "/api/v1/x?y=\\\"z\\\""), "combined: escaped quotes stay in the path", NULL);

	e = comb("10.0.0.1 - - [01/Jan/2020:00:00:00 +0000] \"GET / HTTP/1.1\" 404 -", &r);
	check(e == NULL && r.status == 404, "combined: common format (no referer, agent)", e);
	e = comb("10.0.0.1 - - [01/Jan/2020:00:00:00 +0000] \"GET / HTTP/1.1\" 200 5 \"-\" \"a\" -", &r);
	check(e == NULL && !r.has_latency, "combined: '-' request time", e);

	check(comb("garbage", &r) != NULL, "combined: garbage is refused", NULL);
	check(comb("1.2.3.4 - - [01/Foo/2020:00:00:00 +0000] \"GET / HTTP/1.1\" 200 5", &r) != NULL, "combined: bad month", NULL);
	check(comb("1.2.3.4 - - [01/Jan/2020:00:00:00 +0000] \"-\" 400 0 \"-\" \"-\"", &r) != NULL, "combined: '-' request is refused", NULL);
	check(comb("1.2.3.4 - - [01/Jan/2020:00:00:00 +0000] \"GET / HTTP/1.1\" 20 5", &r) != NULL, "combined: two-digit status", NULL);
	check(comb("1.2.3.4 - - [01/Jan/2020:00:00:00 +0000] \"GET / HTTP/1.1 200 5", &r) != NULL, "combined: unclosed quote", NULL);
	check(comb("1.2.3.4 - - [01/Jan/2020:00:00:00 +0000] \"GET / HTTP/1.1\" 200 5 \"-\" \"-\" 0.1 extra", &r) != NULL, "combined: trailing fields", NULL);
	check(comb("1.2.3.4 - - [01/Jan/2020:00:00:00 +0000] \"GET / HTTP/1.1\" 200 5 \"-\" \"-\" 1e3", &r) != NULL, "combined: request time not decimal", NULL);
	check(comb("1.2.3.4 - - [01/Jan/2020:00:00:00 +0000] \"GET / HTTP/1.1\" 200 5 \"-\" \"x\\", &r) != NULL, "combined: backslash at the end", NULL);

	/* JSON with the default keys ($msec, $time_iso8601, $time_local) */
	json_format_init(&jf);
	e = js(&jf, "{\"time\":1714564800.250,\"remote_addr\":\"203.0.113.7\",\"remote_user\":\"al\\u00e9\",\"method\":\"GET\",\"uri\":\"/a/\\\"b\\\"\",\"status\":200,\"request_time\":0.004,\"extra\":{\"uri\":\"/nested\"}}", &r);
	check(e == NULL, "json: nginx escape=json line parses", e);
	check(r.ts_us == 1714564800250000LL, "json: $msec time", NULL);
	check(span_is(r.user, "al\xc3\xa9"), "json: \\u escape decoded to UTF-8", NULL);
	check(span_is(r.path, "/a/\"b\""), "json: escaped quotes decoded; nested key ignored", NULL);
	check(r.status == 200 && r.has_latency && r.latency_ms == 4.0, "json: status and request time", NULL);
	e = js(&jf, "{\"time\":\"2024-02-29T23:59:59+05:30\",\"method\":\"PUT\",\"uri\":\"/x\",\"status\":\"404\",\"remote_user\":\"\",\"request_time\":\"-\"}", &r);
	check(e == NULL && r.ts_us == 1709231399LL * 1000000, "json: ISO 8601 time, status as a string", e);
	check(r.user.p == NULL && r.client.p == NULL && !r.has_latency, "json: empty user, no client, '-' request time", NULL);
	e = js(&jf, "{\"time\":\"10/Oct/2000:13:55:36 -0700\",\"method\":\"GET\",\"uri\":\"/\",\"status\":301}", &r);
	check(e == NULL && r.ts_us == 971211336LL * 1000000, "json: $time_local time", e);
	check(js(&jf, "{\"time\":1,\"method\":\"GET\",\"uri\":\"/\",\"status\":200", &r) != NULL, "json: truncated object", NULL);
	check(js(&jf, "[1,2]", &r) != NULL, "json: an array is refused", NULL);
	check(js(&jf, "{\"time\":1,\"method\":\"GET\",\"status\":200}", &r) != NULL, "json: no path", NULL);
	check(js(&jf, "{\"time\":1,\"method\":\"GET\",\"uri\":\"/\",\"status\":2000}", &r) != NULL, "json: four-digit status", NULL);
	check(js(&jf, "{\"time\":1,\"method\":\"GET\",\"uri\":\"/\xff\",\"status\":200}", &r) != NULL, "json: invalid UTF-8", NULL);
	check(js(&jf, "{\"time\":true,\"method\":\"GET\",\"uri\":\"/\",\"status\":200}", &r) != NULL, "json: boolean time", NULL);
	check(json_format_set(&jf, "path=request_uri") && !json_format_set(&jf, "nope=x"), "json: --field names", NULL);
	e = js(&jf, "{\"time\":1,\"method\":\"GET\",\"request_uri\":\"/mapped\",\"status\":200}", &r);
	check(e == NULL && span_is(r.path, "/mapped"), "json: a mapped key", e);

	check(parse_iso_time("2024-05-01T12:00:00Z", 20, &ts) && ts == 1714564800LL * 1000000, "iso: Z", NULL);
	check(parse_iso_time("2024-05-01T12:00:00.5-0100", 26, &ts) && ts == (1714564800LL + 3600) * 1000000 + 500000, "iso: fraction, offset without colon", NULL);
	check(!parse_iso_time("2024-13-01T12:00:00Z", 20, &ts), "iso: month 13", NULL);
	check(!parse_clf_time("10/Oct/2000:13:55:36", 20, &ts), "clf: no offset", NULL);

	/* apicount's rules, and the COPY row */
	comb("1.2.3.4 - bob [01/Jan/2020:00:00:00 +0000] \"get /a\\\\b?q=1 HTTP/1.1\" 200 5 \"-\" \"-\" 0.0015", &r);
	check(row_check(&r, &rules) == NULL, "row: a good record passes", NULL);
	row_append(&b, &r);
	snprintf(row, sizeof(row), "%.*s", (int) b.len, b.data);
	check(strcmp(row, "2020-01-01 00:00:00.000000+00\tget\t/a\\\\\\\\b?q=1\t1.2.3.4\tbob\t200\t1.500\n") == 0,
		  "row: COPY text, backslashes doubled", row);
	r.client.p = "host.example";
	r.client.len = 12;
	b.len = 0;
	row_append(&b, &r);
	check(memmem(b.data, b.len, "\t\\N\tbob", 7) != NULL, "row: a host name is sent as NULL", NULL);
	r.client.p = "::1\0\x01";	/* found by fuzz_ship: inet_pton stops at the NUL */
	r.client.len = 5;
	b.len = 0;
	row_append(&b, &r);
	check(memchr(b.data, '\0', b.len) == NULL && memmem(b.data, b.len, "\t\\N\tbob", 7) != NULL,
		  "row: an address with a NUL in it is sent as NULL", NULL);
	r.status = 600;
	check(row_check(&r, &rules) != NULL, "row: status 600 refused", NULL);
	r.status = 200;
	r.path.p = "?only";
	r.path.len = 5;
	check(row_check(&r, &rules) != NULL, "row: empty path after the query is stripped", NULL);
	r.path.p = "/a\x01";
	r.path.len = 3;
	check(row_check(&r, &rules) != NULL, "row: control character in path", NULL);
	r.path.p = "/a";
	r.path.len = 2;
	r.method.p = "GE T";
	r.method.len = 4;
	check(row_check(&r, &rules) != NULL, "row: method not a token", NULL);
	r.method.p = "GET";
	r.method.len = 3;
	rules.oldest_us = r.ts_us + 1;
	check(row_check(&r, &rules) != NULL, "row: older than the retention", NULL);
	rules.oldest_us = 0;
	rules.newest_us = r.ts_us - 1;
	check(row_check(&r, &rules) != NULL, "row: too far in the future", NULL);
	rules.newest_us = INT64_MAX;
	r.latency_ms = 86400001.0;
	check(row_check(&r, &rules) != NULL, "row: request time over a day", NULL);

	check(utf8_valid("\xe2\x82\xac", 3) && !utf8_valid("\xe2\x82", 2) &&
		  !utf8_valid("\xc0\xaf", 2) && !utf8_valid("\xed\xa0\x80", 3),
		  "utf8: valid, truncated, overlong, surrogate", NULL);
	free(b.data);
	free(jf.scratch);
	return tap_done();
}

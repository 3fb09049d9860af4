/*
 * fuzz_ship.c
 *		libFuzzer harness over apicount-ship's parsers (ship/parse_combined.c,
 *		ship/parse_json.c) and row writer (ship/row.c).
 *
 * The first byte picks the format; the rest is one log line.  Besides
 * memory errors (ASan, UBSan) it checks:
 *	- a parsed record's strings lie inside the line (combined) or the
 *	  parser's scratch buffer (JSON), and its status is 3 digits;
 *	- a record that passes row_check becomes exactly one COPY text row:
 *	  7 columns, one newline at its end, no other control character.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "parse_combined.h"
#include "parse_json.h"
#include "row.h"

#define CHECK(cond) do { if (!(cond)) abort(); } while (0)

static JsonFormat jf;
static int	jf_ready = 0;

static void
check_span(Span s, const char *lo, size_t n)
{
	if (s.p != NULL)
		CHECK(s.p >= lo && s.p + s.len <= lo + n);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	LogRecord	r;
	ParseError	e;
	const char *line;
	size_t		len;
	const char *lo;
	size_t		n;
	RowRules	rules = {INT64_MIN, INT64_MAX, 1};
	Buf			b = {0};
	size_t		i;
	int			tabs = 0;

	if (size < 1)
		return 0;
	if (!jf_ready)
	{
		json_format_init(&jf);
		jf_ready = 1;
	}
	line = (const char *) data + 1;
	len = size - 1;
	if (data[0] & 1)
	{
		e = parse_json(&jf, line, len, &r);
		lo = jf.scratch;
		n = jf.cap;
	}
	else
	{
		e = parse_combined(line, len, &r);
		lo = line;
		n = len;
	}
	if (e != NULL)
		return 0;
	check_span(r.method, lo, n);
	check_span(r.path, lo, n);
	check_span(r.client, lo, n);
	check_span(r.user, lo, n);
	CHECK(r.status >= 0 && r.status <= 999);
	if (row_check(&r, &rules) != NULL)
		return 0;
	row_append(&b, &r);
	CHECK(b.len > 0 && b.data[b.len - 1] == '\n');
	for (i = 0; i + 1 < b.len; i++)
	{
		unsigned char c = (unsigned char) b.data[i];

		if (c == '\t')
			tabs++;
		else
			CHECK(c >= 0x20 && c != 0x7f);
	}
	CHECK(tabs == 6);
	free(b.data);
	return 0;
}

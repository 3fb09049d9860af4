/*
 * batch.c — the batcher: rows to COPY and rejected lines of one source,
 * with the position they end at.  A batch holds lines of one file only, so
 * that one position covers it.  The size and age limits are applied by
 * main.c (--batch-lines, --batch-ms).
 */
#include "batch.h"

void
batch_add_row(Batch *b, int64_t start, int64_t lineno)
{
	if (b->nrows == b->cap)
	{
		b->cap = b->cap ? 2 * b->cap : 8192;
		b->row_start = realloc(b->row_start, sizeof(int64_t) * b->cap);
		b->row_line = realloc(b->row_line, sizeof(int64_t) * b->cap);
		if (b->row_start == NULL || b->row_line == NULL)
		{
			fprintf(stderr, "apicount-ship: out of memory\n");
			exit(2);
		}
	}
	b->row_start[b->nrows] = start;
	b->row_line[b->nrows] = lineno;
	b->nrows++;
}

void
batch_reject(Batch *b, const char *file, int64_t lineno, const char *reason,
			 const char *line, size_t len)
{
	char		head[4200];
	int			n;
	size_t		i;

	b->nrejected++;
	n = snprintf(head, sizeof(head), "%s:%lld: %s: ", file, (long long) lineno, reason);
	buf_append(&b->rejects, head, n < (int) sizeof(head) ? (size_t) n : sizeof(head) - 1);
	if (len > 2000)
		len = 2000;
	buf_reserve(&b->rejects, len + 1);
	for (i = 0; i < len; i++)
	{
		unsigned char c = (unsigned char) line[i];

		b->rejects.data[b->rejects.len++] = (c < 0x20 || c == 0x7f) ? '?' : (char) c;
	}
	buf_putc(&b->rejects, '\n');
}

void
batch_clear(Batch *b)
{
	b->rows.len = 0;
	b->sent = 0;
	b->nrows = 0;
	b->nrejected = 0;
	b->rejects.len = 0;
	b->first_ms = 0;
}

bool
batch_empty(const Batch *b)
{
	return b->nrows == 0 && b->nrejected == 0;
}

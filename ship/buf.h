/*
 * buf.h — a growable byte buffer (the client may use malloc; it exits on
 * out-of-memory, since a shipper that cannot buffer a batch cannot go on).
 */
#ifndef SHIP_BUF_H
#define SHIP_BUF_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct Buf
{
	char	   *data;
	size_t		len;
	size_t		cap;
} Buf;

static inline void
buf_reserve(Buf *b, size_t more)
{
	if (b->len + more > b->cap)
	{
		size_t		cap = b->cap ? b->cap : 4096;

		while (cap < b->len + more)
			cap *= 2;
		b->data = realloc(b->data, cap);
		if (b->data == NULL)
		{
			fprintf(stderr, "apicount-ship: out of memory\n");
			exit(2);
		}
		b->cap = cap;
	}
}

static inline void
buf_append(Buf *b, const void *p, size_t n)
{
	buf_reserve(b, n);
	memcpy(b->data + b->len, p, n);
	b->len += n;
}

static inline void
buf_putc(Buf *b, char c)
{
	buf_reserve(b, 1);
	b->data[b->len++] = c;
}

#endif

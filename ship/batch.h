/*
 * batch.h — the lines of one source waiting to be shipped together.
 */
#ifndef SHIP_BATCH_H
#define SHIP_BATCH_H

#include <stdint.h>

#include "buf.h"
#include "follow.h"

/* a committed position of a source */
typedef struct Position
{
	bool		valid;			/* false: the source has none yet */
	char		file_id[FILE_ID_LEN];
	int64_t		offset;
	int64_t		lines;
	int64_t		rejected;
} Position;

typedef struct Batch
{
	Buf			rows;			/* COPY text rows */
	size_t		sent;			/* bytes of rows already sent (streamed) */
	int64_t    *row_start;		/* offset of each row in rows */
	int64_t    *row_line;		/* its line number in its file */
	int			nrows;
	int			cap;
	int64_t		nrejected;
	Buf			rejects;		/* lines for the reject file */
	char		file_id[FILE_ID_LEN];	/* where the batch ends */
	int64_t		end_offset;
	int64_t		first_ms;		/* when its first line came; 0: empty */
} Batch;

/* the row row_append wrote at start (rows.len before it) */
extern void batch_add_row(Batch *b, int64_t start, int64_t lineno);
extern void batch_reject(Batch *b, const char *file, int64_t lineno,
						 const char *reason, const char *line, size_t len);
extern void batch_clear(Batch *b);
extern bool batch_empty(const Batch *b);

#endif

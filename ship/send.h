/*
 * send.h — the COPY sender: one transaction per batch, with its position.
 */
#ifndef SHIP_SEND_H
#define SHIP_SEND_H

#include <libpq-fe.h>

#include "batch.h"
#include "row.h"

typedef enum ShipResult
{
	SHIP_OK,
	SHIP_RESYNC,				/* connection lost or position moved: reconnect, re-read positions */
	SHIP_FATAL					/* an error retrying cannot fix (privileges, no extension) */
} ShipResult;

typedef struct Sender
{
	const char *conninfo;
	PGconn	   *conn;
	int64_t		retention_s;	/* apicount.retention */
	int			normalize;		/* apicount.normalize_paths */
	volatile int *stop;			/* set by SIGTERM/SIGINT */
	bool		in_copy;		/* a batch's transaction and COPY are open */
} Sender;

/* bytes of rows worth sending while the batch is still being parsed */
#define STREAM_CHUNK (64 * 1024)

/* connect, retrying with backoff; false when stopped or on a fatal error */
extern bool sender_connect(Sender *s);
extern void sender_disconnect(Sender *s);

/* the committed position of a source */
extern ShipResult sender_position(Sender *s, const char *source, Position *pos);

/*
 * Send the batch's rows not sent yet, opening its transaction and COPY
 * first: the server counts them while the next lines are parsed.
 */
extern ShipResult sender_stream(Sender *s, Batch *b);

/*
 * Ship a batch in one transaction: its rows by COPY, then the position it
 * ends at (from prev).  Rows apicount refuses after all are retried one by
 * one under savepoints and rejected.  On SHIP_OK, *next is the new position.
 */
extern ShipResult sender_ship(Sender *s, const char *source, Batch *b,
							  const Position *prev, Position *next,
							  const char *file_name);

extern void rules_now(const Sender *s, RowRules *rules);

#endif

/*-------------------------------------------------------------------------
 * known_rows.h
 *		What the worker knows of each counter entry's caller_minute row:
 *		not written yet, written at a known TID, or nothing.
 *
 * Worker only: the state is local to the worker process.
 *-------------------------------------------------------------------------
 */
#ifndef APICOUNT_KNOWN_ROWS_H
#define APICOUNT_KNOWN_ROWS_H

#include "storage/itemptr.h"

#include "counters.h"

typedef enum KnownRow
{
	ROW_NEW,					/* not there, unless someone else wrote it */
	ROW_AT_TID,					/* this worker last wrote it at *tid */
	ROW_UNKNOWN					/* may or may not be there */
} KnownRow;

/* at worker start: nothing is known, rows up to the entries' minutes may exist */
extern void known_rows_start(void);

/* what is known of e's row; *tid is set for ROW_AT_TID */
extern KnownRow known_rows_get(const CounterEntry *e, ItemPointer tid);

/* a committed flush wrote e's row, now at tid (invalid: not known) */
extern void known_rows_written(const CounterEntry *e, ItemPointer tid);

/* e (whose key had this minute) was removed from the counter table */
extern void known_rows_removed(const CounterEntry *e, int32 minute);

#endif

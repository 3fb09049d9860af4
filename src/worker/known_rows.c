/*-------------------------------------------------------------------------
 * known_rows.c
 *		What the worker knows of each counter entry's caller_minute row:
 *		not written yet, written at a known TID, or nothing.
 *
 * The flush writes each caller row the cheapest way that is safe:
 *	- a row that is not there yet with a plain INSERT, which costs
 *	  PostgreSQL about a third less than INSERT ... ON CONFLICT (no probe
 *	  of the unique index before the insert, no speculative insertion);
 *	- a row this worker wrote before with an UPDATE by the TID it got
 *	  back then (a TID scan instead of a descent of the unique index);
 *	- any other row with the upsert.
 * A counter entry's row is new when this worker has never written it and
 * its minute is later than
 *	- the current minute and the minutes of all entries when the worker
 *	  started (an earlier worker, or the server before a restart, may have
 *	  written rows up to then), and
 *	- the minute of every entry the worker has removed (a hit that arrives
 *	  late for a removed minute makes a new entry for a row already there).
 * Neither guess has to be right: someone else may have written a "new" row
 * (a restore, a superuser's INSERT), and a TID may no longer hold the row
 * (VACUUM FULL, CLUSTER, a delete or an update by someone else).  The
 * flush checks both and falls back to the upsert (flush_callers.c).
 *
 * Lock rule: known_rows_start scans the counter table (every partition
 * lock, shared); its caller holds no partition lock.
 *
 * Worker only.  The state is process-local, in TopMemoryContext: a bitmap
 * of written entries and a TID per entry number (6 bytes per entry), and
 * it starts over with each worker process.  Only the worker removes
 * entries, so an entry number names one key from the entry's creation
 * until known_rows_removed.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "entry_table.h"
#include "known_rows.h"

static uint64 *written_bits = NULL;
static ItemPointerData *row_tids = NULL;
static uint32 nentries = 0;
static int32 old_minutes_end;	/* rows up to this minute may exist */

/*
 * The state, made when the worker starts: nothing written yet, and rows may
 * exist up to the latest minute of the entries there now (an earlier worker
 * may have written them; hits may be up to 5 minutes ahead) or the current
 * minute (rows written before a restart of the server).  Entries made after
 * this were never seen by an earlier worker.
 */
void
known_rows_start(void)
{
	uint64	   *bits;
	ItemPointerData *tids;
	int32		end = apicount_minute_of(GetCurrentTimestamp());
	uint32		n = etab_pool_size();
	uint32		cursor = 0;
	CounterEntry *e;

	if (written_bits != NULL)
		return;
	bits = MemoryContextAllocZero(TopMemoryContext,
								  sizeof(uint64) * (n / 64 + 1));
	tids = MemoryContextAllocHuge(TopMemoryContext,
								  sizeof(ItemPointerData) * Max(n, 1));
	counters_lock_all(LW_SHARED);
	while ((e = etab_next(&cursor)) != NULL)
		end = Max(end, e->key.minute);
	counters_unlock_all();

	nentries = n;
	row_tids = tids;
	old_minutes_end = end;
	written_bits = bits;
}

static uint32
entry_number(const CounterEntry *e)
{
	uint32		n;

	Assert(written_bits != NULL);
	n = etab_number(e);
	Assert(n < nentries);
	return n;
}

static inline bool
is_written(uint32 n)
{
	return (written_bits[n / 64] & (UINT64CONST(1) << (n % 64))) != 0;
}

KnownRow
known_rows_get(const CounterEntry *e, ItemPointer tid)
{
	uint32		n = entry_number(e);

	if (!is_written(n))
		return e->key.minute > old_minutes_end ? ROW_NEW : ROW_UNKNOWN;
	if (!ItemPointerIsValid(&row_tids[n]))
		return ROW_UNKNOWN;
	ItemPointerCopy(&row_tids[n], tid);
	return ROW_AT_TID;
}

void
known_rows_written(const CounterEntry *e, ItemPointer tid)
{
	uint32		n = entry_number(e);

	written_bits[n / 64] |= UINT64CONST(1) << (n % 64);
	ItemPointerCopy(tid, &row_tids[n]);
}

void
known_rows_removed(const CounterEntry *e, int32 minute)
{
	uint32		n = entry_number(e);

	written_bits[n / 64] &= ~(UINT64CONST(1) << (n % 64));
	old_minutes_end = Max(old_minutes_end, minute);
}

/*-------------------------------------------------------------------------
 * flush.h
 *		Writing counters to the rollup tables (worker only).
 *
 * The flush family, one file per job:
 *	flush.c				the cycle: snapshot, one transaction of writes, subtract;
 *						freeing entries past the live horizon
 *	flush_api.c			api_minute, api_hour, api_day, api_total_*
 *	flush_callers.c		caller_minute, each row the cheapest safe way
 *	flush_heavy.c		the summaries of heavy callers and their bounds
 *	flush_retention.c	deleting rows past their tier's retention
 *	flush_sql.c			the SQL entry points that drive the worker
 *
 * The worker loop (worker.c) uses the first part; the second part is
 * shared between the flush files only.
 *-------------------------------------------------------------------------
 */
#ifndef APICOUNT_FLUSH_H
#define APICOUNT_FLUSH_H

#include "counters.h"
#include "heavy.h"
#include "latency_store.h"

/* ---- for the worker loop ---- */

/*
 * One flush: snapshot unflushed deltas, upsert them, subtract them.
 * Runs its own transaction; returns false (with errbuf filled) if the
 * flush failed, in which case every delta stays in shared memory.
 */
extern bool flush_counters(int64 *written, char *errbuf, int errlen);

/*
 * Free entries that are flushed and older than the live horizon; with
 * discard, free every entry (the extension was dropped).
 */
extern void flush_free_entries(bool discard);

/* without the extension: give the ring slots of past minutes to later ones */
extern void flush_discard_heavy(void);

/* set before the last flush at shutdown: write every summary of heavy callers */
extern bool flush_heavy_all;

/* delete rollup rows older than apicount.retention, in bounded batches */
extern void flush_apply_retention(void);

/* ---- between the flush files ---- */

/* one entry's unflushed deltas, as the snapshot copied them */
typedef struct FlushItem
{
	CounterEntry *entry;		/* NULL for the spill counters */
	CounterKey	key;
	CounterDelta d;
	CounterOther o;				/* API items: the "(other callers)" counts */
	ItemPointerData tid;		/* where the flush wrote the caller row */
} FlushItem;

static inline bool
delta_is_zero(const CounterDelta *d)
{
	return d->calls == 0 && d->lat_count == 0;
}

static inline bool
is_api_item(const FlushItem *it)
{
	return (it->key.flags & KEY_API) != 0;
}

/* flush.c: helpers of the writes (inside the flush transaction, SPI connected) */

/* 1 when the installed extension has the 0.2 schema (set by each flush) */
extern int	flush_schema_v2;

/* whether apicount.<name> exists (tables added by later versions) */
extern bool flush_table_exists(const char *name);

/* the text of a string-table hash; ERROR if it is missing */
extern Datum flush_string_datum(uint64 h);

/* a one-dimensional array of n values of type (nulls may be NULL) */
extern Datum flush_make_array(Datum *values, bool *nulls, int n, Oid type);

/* flush_api.c: the API rollup tiers */
typedef enum ApiTier
{
	TIER_MINUTE,
	TIER_HOUR,
	TIER_DAY,
	/* all APIs per minute, hour and day (api_total_*, 0.4) */
	TIER_TOTAL_MINUTE,
	TIER_TOTAL_HOUR,
	TIER_TOTAL_DAY
} ApiTier;

#define IS_TOTAL(tier)	((tier) >= TIER_TOTAL_MINUTE)

/* upsert one tier's rows from the API items and the latency pages */
extern void flush_api_rows(FlushItem *items, int nitems, LatSnap *lat, int nlat,
						   ApiTier tier);

/* flush_callers.c: caller rows written by each statement in the current flush */
typedef struct CallerWrites
{
	int64		inserted;
	int64		updated;
	int64		upserted;
} CallerWrites;

/* write the caller_minute rows; each row's TID lands in its first item */
extern void flush_caller_rows(FlushItem *items, int nitems, CallerWrites *writes);

/* flush_heavy.c: snapshots of the summaries of heavy callers that this flush writes */
typedef struct HeavyDue
{
	int			nminutes;
	int32		minutes[HEAVY_RING];
	HeavySnapshot *snaps[HEAVY_RING * HEAVY_NDIMS];	/* NULL: none */
} HeavyDue;

/* before the transaction: the minutes past the live horizon (all at shutdown) */
extern void flush_heavy_take(HeavyDue *due);

/* in the transaction: write them, merged with earlier summaries */
extern void flush_heavy_write(const HeavyDue *due);

/* after the commit: the ring slots go to later minutes */
extern void flush_heavy_retire(const HeavyDue *due);

#endif

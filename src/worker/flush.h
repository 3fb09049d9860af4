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
 *	flush_columns.c		the rollup column lists -> statements and arrays
 *	flush_retention.c	deleting rows past their tier's retention
 *	flush_sql.c			the SQL entry points that drive the worker
 *
 * The worker loop (worker.c) uses the first part; the second part is
 * shared between the flush files only.
 *-------------------------------------------------------------------------
 */
#ifndef APICOUNT_FLUSH_H
#define APICOUNT_FLUSH_H

#include "lib/stringinfo.h"

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


/*
 * flush_columns.c: a rollup table's columns, defined once.  Each table's
 * writer has one array of RollupColumn (api_columns, caller_columns); the
 * statements and the arrays bound to them are generated from it, one
 * array parameter per column, in its order.  A new column is one line
 * there, plus the SQL script that adds it.
 */
#define FLUSH_MAX_COLUMNS	16

typedef enum ColumnMerge
{
	MERGE_KEY,					/* part of the unique key: not merged */
	MERGE_ADD,					/* t.x + new.x */
	MERGE_MIN,					/* LEAST(t.x, new.x) */
	MERGE_MAX,					/* GREATEST(t.x, new.x) */
	MERGE_OR,					/* t.x OR new.x */
	MERGE_HIST					/* a latency histogram: _latency_hist_add */
} ColumnMerge;

/* a column's value in one row; sets *isnull (false on entry) for NULL */
typedef Datum (*ColumnValue) (const void *row, void *cxt, bool *isnull);

typedef struct RollupColumn
{
	const char *name;
	Oid			type;			/* of one value */
	ColumnMerge merge;			/* on conflict */
	int			flags;			/* COL_* */
	ColumnValue value;			/* NULL: the int64 at offset in the row */
	Size		offset;
} RollupColumn;

#define COL_PER_API		0x01	/* not in the sums over all APIs (api_total_*) */
#define COL_NULLABLE	0x02	/* a key column that may be NULL */
#define COL_SINCE_0_2	0x04	/* from extension version 0.2 on */
#define COL_COARSE_ONLY	0x08	/* only in the hour and day tiers (caller_hour,
								 * caller_day: first_seen, last_seen) */

/* the columns of a list that one statement writes */
typedef struct ColumnSet
{
	const RollupColumn *cols;
	int			n;
	int			idx[FLUSH_MAX_COLUMNS];	/* in cols */
} ColumnSet;

/* the columns of cols[0 .. ncols-1] with none of the flags in skip */
extern void column_set_init(ColumnSet *set, const RollupColumn *cols, int ncols,
							int skip);

/* "a, b, c" */
extern void column_names_sql(StringInfo buf, const ColumnSet *set);

/* "pg_catalog.unnest($1::pg_catalog.<type>[]), ..." for $1 .. $n */
extern void column_unnest_sql(StringInfo buf, const ColumnSet *set);
extern void column_unnest_param(StringInfo buf, int param, Oid type, bool comma);

/* " a = t.a OPERATOR(pg_catalog.+) <src>.a, ..." for the merged columns */
extern void column_merge_sql(StringInfo buf, const ColumnSet *set, const char *src);

/* " AND t.k OPERATOR(pg_catalog.=) <src>.k ..." for the key columns */
extern void column_key_match_sql(StringInfo buf, const ColumnSet *set,
								 const char *src);

/*
 * INSERT INTO apicount.<table> AS t (columns) SELECT unnest(...), with an
 * upsert ON CONFLICT (key) DO UPDATE SET (merges), and RETURNING returning
 * unless NULL.
 */
extern char *rollup_insert_sql(const char *table, const ColumnSet *set,
							   bool upsert, const char *returning);

/* one array parameter per column of set, from rows[0 .. n-1]: args, types */
extern void column_bind(const ColumnSet *set, const void *const *rows, int n,
						void *cxt, Datum *args, Oid *types);

/* values[0 .. n-1] (nulls may be NULL) as an array parameter: *arg, *argtype */
extern void flush_bind_array(Datum *values, bool *nulls, int n, Oid elemtype,
							 Datum *arg, Oid *argtype);

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

/*-------------------------------------------------------------------------
 * groupagg.h
 *		Aggregation of live entries into groups (query side, backend-local).
 *
 * An open-addressing table keyed by a 64-bit fingerprint of the group key,
 * with the full key compared on every fingerprint match, so grouping is
 * exact.  Memory: everything is palloc'd in the caller's context.
 *-------------------------------------------------------------------------
 */
#ifndef APICOUNT_GROUPAGG_H
#define APICOUNT_GROUPAGG_H

#include "counters.h"

typedef struct GroupKey
{
	uint64		method_h;
	uint64		path_h;
	uint64		user_h;
	int32		minute;
	uint8		ip_family;
	uint8		ip_bits;
	uint8		pad[2];
	uint8		ip_addr[16];
} GroupKey;

typedef struct GroupRow
{
	GroupKey	key;
	CounterDelta d;				/* unflushed deltas (minute groups), latency */
	uint64		calls;			/* window groups */
	uint64		ok;
	uint64		errors;
	uint64		calls_error;	/* calls - calls_error <= truth <= calls */
	uint32		heavy_seen;		/* bit i: in the heavy summary of minute i */
	uint32		clean;			/* bit i: the group is one caller key with an
								 * entry of summary i's minute made before
								 * that summary first evicted, so it folded
								 * nothing then (counters.h, "late") */
	bool		folded_before;	/* has an entry whose caller may have been
								 * folded before (CounterTail.late) */
	const char *user;			/* a summary's copy of the user id, if any
								 * (a folded caller's is not interned) */
	int			user_len;
	const void *api_counter;	/* _live_heavy_apis: the first HeavyCounter
								 * of a folded API, which holds its text */
} GroupRow;

typedef struct GroupAgg
{
	GroupRow   *rows;
	uint64	   *row_fp;
	int			nrows;
	int			cap;
	int32	   *table;			/* row index + 1, 0 = empty */
	uint32		mask;
} GroupAgg;

extern uint64 groupkey_fingerprint(const GroupKey *k);
extern GroupAgg *groupagg_create(int expected);

/* the group's row, or NULL */
extern GroupRow *groupagg_find(GroupAgg *agg, const GroupKey *k, uint64 fp);

/* the group's row, added zeroed if new */
extern GroupRow *groupagg_get(GroupAgg *agg, const GroupKey *k, uint64 fp);

#endif

/*-------------------------------------------------------------------------
 * heavy.h
 *		Heavy callers among the folded ones: Space-Saving summaries.
 *
 * When the caller tier is full, a caller's hits are folded into its API's
 * "(other callers)" (counters.h).  Each folded hit is also counted here,
 * per minute, in one summary for each way the queries group callers: by
 * (API, IP, user id), (API, IP), (API, user id) and (API, network).  A
 * summary is the Space-Saving algorithm of Metwally, Agrawal and El Abbadi
 * ("Efficient computation of frequent and top-k elements in data
 * streams", ICDT 2005), weighted: m counters; a new key takes the counter
 * with the smallest count c (a min-heap finds it) and starts at c + w with
 * error c.  For the F folded calls of a minute and every key:
 *		count - error <= truth <= count, and error <= min count <= F / m;
 * a key absent from the summary has truth <= min count (0 until the
 * summary first evicts).  So every caller with more than F / m folded
 * calls in a minute is in it.  Counters keep their exact calls and errors
 * per slot since they were taken, for the sliding windows.
 *
 * A fifth summary per minute (HEAVY_API) counts the same way the calls of
 * APIs that the API tier had no room for (counted under their method's
 * "(other)" path), keyed by (minute, method, path) and keeping the method
 * and path themselves: top_apis names the heavy ones, with the same bound
 * (F: the calls folded into "(other)" in the minute).
 *
 * Summaries live in a ring of HEAVY_RING minutes; the worker writes each
 * minute's summaries to apicount.caller_heavy_minute once the minute is
 * past the live horizon, and gives the ring slot to a later minute.  A
 * folded hit whose minute has no summary (far in the past or the future)
 * is counted in "(other callers)" only (stats.folded_unsummarized).
 *
 * Strings: a counter keeps its user id in itself (a folded caller has no
 * entry to hold it in the string table).  Its method and path are those
 * of an API entry of the same minute, which the worker frees only after
 * it has written and retired that minute's summaries (flush_heavy.c).
 *
 * Locking rules: one LWLock per ring slot (the five summaries of a minute;
 * a caller fold updates four together), taken exclusively to add or to retire
 * and shared to copy.  It is taken after, never while holding, a counter
 * partition or string-table lock.
 *-------------------------------------------------------------------------
 */
#ifndef APICOUNT_HEAVY_H
#define APICOUNT_HEAVY_H

#include "storage/lwlock.h"

#include "counters.h"
#include "normalize.h"

typedef enum HeavyDim
{
	HEAVY_IP_USER,
	HEAVY_IP,
	HEAVY_USER,
	HEAVY_NET,
	HEAVY_API,					/* folded APIs (not a caller grouping) */
	HEAVY_NDIMS
} HeavyDim;

/* the caller groupings: the dimensions before HEAVY_API */
#define HEAVY_CALLER_DIMS	HEAVY_API

#define HEAVY_RING	4			/* minutes with summaries: now - 2 .. now + 1 */

/* the value of apicount.caller_heavy_minute.grouped_by for a dimension */
extern const char *const heavy_dim_names[HEAVY_NDIMS];

/* one counter, copied out of a summary */
typedef struct HeavyCounter
{
	CounterKey	key;			/* the group (fields outside it are zero) */
	int			user_len;
	char		user[APICOUNT_MAX_USER + 1];	/* when key.user_h != 0 */
	int			method_len;		/* HEAVY_API: the API's method and path */
	char		method[APICOUNT_MAX_METHOD + 1];
	int			path_len;
	char		path[APICOUNT_MAX_PATH + 1];
	uint64		count;
	uint64		error;
	uint32		slot_calls[APICOUNT_MAX_SLOTS];
	uint32		slot_errors[APICOUNT_MAX_SLOTS];
} HeavyCounter;

/* a copy of one summary */
typedef struct HeavySnapshot
{
	HeavyDim	dim;
	int32		minute;
	uint64		folded;			/* F: calls counted in it */
	uint64		min_count;		/* bound for absent keys (0 if none evicted) */
	int			n;
	HeavyCounter *counters;
} HeavySnapshot;

extern int	heavy_lwlock_count(void);
extern Size heavy_shmem_size(void);
extern void heavy_shmem_init(LWLockPadded *locks);

/* the group of a caller key in a dimension: IP and user kept or not, IP
 * masked to its network for HEAVY_NET (apicount.net_prefix_v4 / _v6) */
extern void heavy_project(const CounterKey *caller, HeavyDim dim,
						  CounterKey *group);

/* mask an IP address in a key to its network */
extern void heavy_mask_net(CounterKey *key);

/*
 * Commit path, before a caller is folded: set its bits in the Bloom filter
 * of its minute (what heavy_maybe_folded reads), so that the fold can look
 * for the caller's entry once more and leave it alone if one was made
 * meanwhile (counters.c).  Never throws.
 */
extern void heavy_note_fold(const CounterKey *caller);

/*
 * Commit path: count a folded caller's calls (errors, per-slot counts) in
 * each dimension's summary of its minute, after heavy_note_fold (which set
 * its Bloom bits).  False if the minute has none.
 * Bounded work: O(log m) per dimension.  Never throws.
 */
extern bool heavy_add(const CounterKey *caller, const char *user, int user_len,
					  uint64 calls, uint64 errors, const LocalSlot *slots);

/*
 * Commit path: count the calls of an API that the API tier had no room
 * for (folded into its method's "(other)" path) in the HEAVY_API summary
 * of its minute, keeping its method and path.  False if the minute has
 * none.  Never throws.
 */
extern bool heavy_add_api(const CounterKey *api, const char *method,
						  int method_len, const char *path, int path_len,
						  uint64 calls, const LocalSlot *slots);

/* a counter's errors since it was taken (the sum of its slots) */
extern uint64 heavy_counter_errors(const HeavyCounter *hc);

/* copy the summary of dim for minute; NULL if the ring has none */
extern HeavySnapshot *heavy_snapshot(HeavyDim dim, int32 minute);

/*
 * Worker: the minutes of the ring that ended before cutoff (their
 * summaries are to be written), and after the write commits, their
 * retirement (the ring slot goes to a later minute).
 */
extern int	heavy_due_minutes(int32 cutoff, int32 *minutes);
extern void heavy_retire(int32 minute, int32 now_minute);

/*
 * May this caller key have been folded in its minute?  False only when it
 * was not (a Bloom filter of the minute's folded keys; "true" when unsure).
 * Lock-free: called under a counter partition lock.
 */
extern bool heavy_maybe_folded(const CounterKey *caller);

/* the largest minimum count of a minute's caller summaries (0: none evicted) */
extern uint64 heavy_bound(int32 minute);

/* the counters per summary (apicount.heavy_counters) */
extern int	heavy_capacity(void);

#endif

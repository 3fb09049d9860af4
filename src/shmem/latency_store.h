/*-------------------------------------------------------------------------
 * latency_store.h
 *		Unflushed latency histograms in shared memory.
 *
 * One page per (method, path, minute, group of LAT_PAGE_BUCKETS buckets)
 * holds 32-bit counts.  Pages only hold what the worker has not flushed
 * yet: each flush subtracts what it wrote and removes the emptied pages,
 * so the store needs room for about one flush interval of distinct (API,
 * minute, bucket group) triples.  A latency that finds no
 * page is counted in latency_unbinned (apicount.stats) and left out of
 * the histograms; latency count, sum and maximum stay exact.
 *
 * Locking rules (as in counters.h): LAT_PARTITIONS LWLocks; adding to an
 * existing page takes its partition lock shared and adds atomically;
 * creating or removing a page takes it exclusively; only the worker
 * removes pages, so it may keep page pointers from its snapshot to its
 * subtraction.  Never hold a partition lock while taking another lock.
 *-------------------------------------------------------------------------
 */
#ifndef APICOUNT_LATENCY_STORE_H
#define APICOUNT_LATENCY_STORE_H

#include "port/atomics.h"
#include "storage/lwlock.h"

#include "latency_codec.h"

#define LAT_PARTITIONS	16

typedef struct LatKey
{
	uint64		method_h;
	uint64		path_h;
	int32		minute;
	int16		page;			/* bucket / LAT_PAGE_BUCKETS */
	int16		pad;
} LatKey;

typedef struct LatPage
{
	LatKey		key;
	pg_atomic_uint32 counts[LAT_PAGE_BUCKETS];
} LatPage;

/* backend-local bucket counts of one key (pending.c) */
typedef struct LatPair
{
	uint16		idx;
	uint64		count;
} LatPair;

/* a flush's copy of one page */
typedef struct LatSnap
{
	LatPage    *page;
	LatKey		key;
	uint32		counts[LAT_PAGE_BUCKETS];
} LatSnap;

/* entries: of both counter tiers (apicount.max_entries + max_apis) */
extern Size latstore_shmem_size(int64 entries);
extern void latstore_shmem_init(int64 entries, LWLockPadded *locks);

/* add counts (pairs sorted by idx); never throws */
extern void latstore_add(uint64 method_h, uint64 path_h, int32 minute,
						 const LatPair *pairs, int npairs);

/* count latencies that cannot be binned (their hits went to spill) */
extern void latstore_add_unbinned(const LatPair *pairs, int npairs);

/* copy every non-empty page with minute in [from, to], in CurrentMemoryContext */
extern LatSnap *latstore_snapshot(int32 from_minute, int32 to_minute, int *n);

/* worker: subtract a flushed copy */
extern void latstore_subtract(const LatSnap *snap, int n);

/* worker: remove the empty pages, or all pages */
extern void latstore_free_pages(bool discard);

extern int64 latstore_pages_used(void);
extern int64 latstore_pages_capacity(void);
extern uint64 latstore_unbinned(void);

/* a bytea in the stored format from a dense histogram (LAT_NBUCKETS counts) */
extern bytea *lat_dense_to_bytea(const uint64 *dense);

/* the snapshot pages (indexes into a LatSnap array) of one histogram */
typedef struct LatPageList
{
	int			n;
	int			cap;
	int		   *pages;
} LatPageList;

extern void lat_pages_append(LatPageList *list, int page);

/* the bytea of a list's pages; dense (LAT_NBUCKETS) is zero before and after */
extern bytea *lat_pages_to_bytea(const LatSnap *snap, const LatPageList *list,
								 uint64 *dense);

#endif

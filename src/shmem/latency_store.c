/*-------------------------------------------------------------------------
 * latency_store.c
 *		The shared-memory pages of unflushed latency histograms: add at
 *		commit, snapshot, subtract and free for the worker; and the stored
 *		histogram (bytea) of a snapshot's pages, for the flush and the live
 *		read.
 *
 * Locking rules: see latency_store.h.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "compat.h"

#include "storage/shmem.h"
#include "utils/hsearch.h"

#include "latency_store.h"

typedef struct LatHeader
{
	int64		capacity;
	pg_atomic_uint64 unbinned;
} LatHeader;

static HTAB *latstore = NULL;
static LatHeader *lathdr = NULL;
static LWLockPadded *latlocks = NULL;

/*
 * Pages held at once: one flush interval of distinct (API, minute, bucket
 * group) triples.  An eighth of the entries of both tiers
 * (apicount.max_entries + apicount.max_apis) plus 1,024 (14,774 pages,
 * 236,384 bucket counters at the defaults), about 5 % of the shared memory.
 */
static int64
page_capacity(int64 entries)
{
	return entries / 8 + 1024;
}

Size
latstore_shmem_size(int64 entries)
{
	return add_size(MAXALIGN(sizeof(LatHeader)),
					hash_estimate_size(page_capacity(entries),
									   sizeof(LatPage)));
}

void
latstore_shmem_init(int64 entries, LWLockPadded *locks)
{
	bool		found;
	HASHCTL		info;

	latlocks = locks;
	lathdr = ShmemInitStruct("apicount latency header", sizeof(LatHeader),
							 &found);
	if (!found)
	{
		lathdr->capacity = page_capacity(entries);
		pg_atomic_init_u64(&lathdr->unbinned, 0);
	}
	memset(&info, 0, sizeof(info));
	info.keysize = sizeof(LatKey);
	info.entrysize = sizeof(LatPage);
	info.num_partitions = LAT_PARTITIONS;
	latstore = ShmemInitHash("apicount latency pages",
							 page_capacity(entries),
							 page_capacity(entries), &info,
							 HASH_ELEM | HASH_BLOBS | HASH_PARTITION |
							 HASH_FIXED_SIZE);
}

static inline LWLock *
page_lock(uint32 hashcode)
{
	return &latlocks[hashcode % LAT_PARTITIONS].lock;
}

/* add one page's share of pairs[0..n); false if it would wrap a count */
static bool
add_to_page(LatPage *p, const LatPair *pairs, int n)
{
	int			i;

	for (i = 0; i < n; i++)
	{
		int			b = pairs[i].idx % LAT_PAGE_BUCKETS;

		if ((uint64) pg_atomic_read_u32(&p->counts[b]) + pairs[i].count >=
			PG_UINT32_MAX)
			return false;
	}
	for (i = 0; i < n; i++)
		pg_atomic_fetch_add_u32(&p->counts[pairs[i].idx % LAT_PAGE_BUCKETS],
								(uint32) pairs[i].count);
	return true;
}

static void
add_unbinned(const LatPair *pairs, int n)
{
	uint64		total = 0;
	int			i;

	for (i = 0; i < n; i++)
		total += pairs[i].count;
	pg_atomic_fetch_add_u64(&lathdr->unbinned, total);
}

void
latstore_add_unbinned(const LatPair *pairs, int npairs)
{
	add_unbinned(pairs, npairs);
}

static void
add_page(const LatKey *key, const LatPair *pairs, int n)
{
	uint32		hashcode = get_hash_value(latstore, key);
	LWLock	   *lock = page_lock(hashcode);
	LatPage    *p;
	bool		found;
	bool		added = false;

	LWLockAcquire(lock, LW_SHARED);
	p = hash_search_with_hash_value(latstore, key, hashcode, HASH_FIND, NULL);
	if (p != NULL)
		added = add_to_page(p, pairs, n);
	LWLockRelease(lock);
	if (p != NULL)
	{
		if (!added)
			add_unbinned(pairs, n);
		return;
	}

	LWLockAcquire(lock, LW_EXCLUSIVE);
	p = hash_search_with_hash_value(latstore, key, hashcode, HASH_ENTER_NULL,
									&found);
	if (p != NULL)
	{
		if (!found)
		{
			int			i;

			for (i = 0; i < LAT_PAGE_BUCKETS; i++)
				pg_atomic_init_u32(&p->counts[i], 0);
		}
		added = add_to_page(p, pairs, n);
	}
	LWLockRelease(lock);
	if (!added)
		add_unbinned(pairs, n);
}

void
latstore_add(uint64 method_h, uint64 path_h, int32 minute,
			 const LatPair *pairs, int npairs)
{
	int			i = 0;

	while (i < npairs)
	{
		LatKey		key;
		int			j = i + 1;

		memset(&key, 0, sizeof(key));
		key.method_h = method_h;
		key.path_h = path_h;
		key.minute = minute;
		key.page = pairs[i].idx / LAT_PAGE_BUCKETS;
		while (j < npairs && pairs[j].idx / LAT_PAGE_BUCKETS == key.page)
			j++;
		add_page(&key, pairs + i, j - i);
		i = j;
	}
}

static void
lock_all(LWLockMode mode)
{
	int			i;

	for (i = 0; i < LAT_PARTITIONS; i++)
		LWLockAcquire(&latlocks[i].lock, mode);
}

static void
unlock_all(void)
{
	int			i;

	for (i = LAT_PARTITIONS - 1; i >= 0; i--)
		LWLockRelease(&latlocks[i].lock);
}

LatSnap *
latstore_snapshot(int32 from_minute, int32 to_minute, int *nout)
{
	int			cap = 256;
	int			n = 0;
	LatSnap    *snap = palloc_extended(cap * sizeof(LatSnap), MCXT_ALLOC_HUGE);
	HASH_SEQ_STATUS seq;
	LatPage    *p;

	lock_all(LW_SHARED);
	hash_seq_init(&seq, latstore);
	while ((p = hash_seq_search(&seq)) != NULL)
	{
		LatSnap    *s;
		bool		any = false;
		int			i;

		if (p->key.minute < from_minute || p->key.minute > to_minute)
			continue;
		if (n == cap)
		{
			cap *= 2;
			snap = repalloc_huge(snap, cap * sizeof(LatSnap));
		}
		s = &snap[n];
		for (i = 0; i < LAT_PAGE_BUCKETS; i++)
		{
			s->counts[i] = pg_atomic_read_u32(&p->counts[i]);
			any |= s->counts[i] != 0;
		}
		if (!any)
			continue;
		s->page = p;
		s->key = p->key;
		n++;
	}
	unlock_all();
	*nout = n;
	return snap;
}

void
latstore_subtract(const LatSnap *snap, int n)
{
	int			i,
				b;

	for (i = 0; i < n; i++)
		for (b = 0; b < LAT_PAGE_BUCKETS; b++)
			if (snap[i].counts[b] != 0)
				pg_atomic_fetch_sub_u32(&snap[i].page->counts[b],
										snap[i].counts[b]);
}

static bool
page_is_empty(LatPage *p)
{
	int			i;

	for (i = 0; i < LAT_PAGE_BUCKETS; i++)
		if (pg_atomic_read_u32(&p->counts[i]) != 0)
			return false;
	return true;
}

void
latstore_free_pages(bool discard)
{
	int			cap = 256,
				n = 0,
				i;
	LatKey	   *cand = palloc_extended(cap * sizeof(LatKey), MCXT_ALLOC_HUGE);
	HASH_SEQ_STATUS seq;
	LatPage    *p;

	lock_all(LW_SHARED);
	hash_seq_init(&seq, latstore);
	while ((p = hash_seq_search(&seq)) != NULL)
	{
		if (!discard && !page_is_empty(p))
			continue;
		if (n == cap)
		{
			cap *= 2;
			cand = repalloc_huge(cand, cap * sizeof(LatKey));
		}
		cand[n++] = p->key;
	}
	unlock_all();

	for (i = 0; i < n; i++)
	{
		uint32		hashcode = get_hash_value(latstore, &cand[i]);
		LWLock	   *lock = page_lock(hashcode);

		LWLockAcquire(lock, LW_EXCLUSIVE);
		p = hash_search_with_hash_value(latstore, &cand[i], hashcode,
										HASH_FIND, NULL);
		/* an add may have arrived since the scan: keep the page then */
		if (p != NULL && (discard || page_is_empty(p)))
			hash_search_with_hash_value(latstore, &cand[i], hashcode,
										HASH_REMOVE, NULL);
		LWLockRelease(lock);
	}
	pfree(cand);
}

int64
latstore_pages_used(void)
{
	return (int64) hash_get_num_entries(latstore);
}

int64
latstore_pages_capacity(void)
{
	return lathdr->capacity;
}

uint64
latstore_unbinned(void)
{
	return pg_atomic_read_u64(&lathdr->unbinned);
}

/* ---- histograms from snapshot pages (the flush, the live read) ---- */

bytea *
lat_dense_to_bytea(const uint64 *dense)
{
	uint8		buf[LAT_MAX_ENCODED];
	size_t		n = lat_encode(dense, buf);
	bytea	   *b = palloc(VARHDRSZ + n);

	SET_VARSIZE(b, VARHDRSZ + n);
	memcpy(VARDATA(b), buf, n);
	return b;
}

void
lat_pages_append(LatPageList *list, int page)
{
	if (list->n == list->cap)
	{
		list->cap = list->cap == 0 ? 4 : list->cap * 2;
		list->pages = list->pages == NULL ?
			palloc(sizeof(int) * list->cap) :
			repalloc(list->pages, sizeof(int) * list->cap);
	}
	list->pages[list->n++] = page;
}

bytea *
lat_pages_to_bytea(const LatSnap *snap, const LatPageList *list, uint64 *dense)
{
	bytea	   *b;
	int			i,
				j;

	for (i = 0; i < list->n; i++)
	{
		const LatSnap *p = &snap[list->pages[i]];

		for (j = 0; j < LAT_PAGE_BUCKETS; j++)
			dense[p->key.page * LAT_PAGE_BUCKETS + j] += p->counts[j];
	}
	b = lat_dense_to_bytea(dense);
	for (i = 0; i < list->n; i++)
		memset(&dense[snap[list->pages[i]].key.page * LAT_PAGE_BUCKETS], 0,
			   sizeof(uint64) * LAT_PAGE_BUCKETS);
	return b;
}

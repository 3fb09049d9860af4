/*-------------------------------------------------------------------------
 * pending.c
 *		Per-transaction local counts and their merge at commit.
 *
 * Owns the stack of savepoint levels.  Each level maps key -> counts: the
 * entries are packed in blocks and found through an open-addressing index
 * of (hash, pointer) pairs (lib/simplehash.h), in the level's own memory
 * contexts.  COPY prepares each row a few rows before recording it
 * (pending_prepare hashes its key and prefetches the index slot it will
 * probe; pending_add records it), so the index lookups mostly hit the
 * cache.  A released savepoint merges its level into its parent, a
 * rolled-back one deletes it, and the top-level commit merges everything
 * into shared memory (counters_add), one call per distinct key, so a COPY
 * of a million rows costs one merge per key.
 *
 * Latencies are kept per key as sorted (bucket, count) pairs and go to the
 * latency store (latency_store.h) under the API the counts landed on: the
 * key's own, or overflow when the counter table had no room.
 *
 * Memory and error rules: the merge runs in the XACT_EVENT_COMMIT callback,
 * after the commit record, where an ERROR is not allowed: counters_add
 * never throws and nothing here allocates during the merge.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "utils/memutils.h"

#include "counters.h"
#include "entry_table.h"
#include "latency_store.h"
#include "pending.h"

typedef struct PendingEntry
{
	CounterKey	key;			/* first: the index refers to entries by it */
	uint32		hash;			/* etab_hash(&key), for the index and at commit */
	struct PendingEntry *next;	/* the level's entries, newest first */
	char	   *method;
	char	   *path;
	char	   *user;
	int16		method_len;
	int16		path_len;
	int16		user_len;
	int16		lat_n;			/* pairs in lat */
	int16		lat_cap;
	LatPair    *lat;			/* sorted by idx, in the level's datacxt;
								 * dense (below) when lat_n == LAT_NBUCKETS */
	CounterDelta d;
	LocalSlot	slots[FLEXIBLE_ARRAY_MEMBER];
} PendingEntry;

StaticAssertDecl(offsetof(PendingEntry, key) == 0,
				 "a pending entry must start with its key");

/* counts to add to an entry: one hit, or a whole entry of a child level */
typedef struct Counts
{
	const CounterDelta *d;
	const LocalSlot *slots;		/* every slot, or only slots[0] (below) */
	int			slot;			/* -1: slots[] has every slot; else its one */
	const LatPair *lat;
	int			lat_n;
} Counts;

/*
 * The level's index: open addressing (lib/simplehash.h), 16 bytes a key,
 * holding the key's hash and a pointer to its entry.  A lookup compares
 * stored hashes first and reads an entry only on a hash match, so a key
 * that is not there (most rows of a COPY once the level is full) costs one
 * probe of a compact array rather than a walk through 300-byte entries.
 */
typedef struct PendingRef
{
	const CounterKey *key;		/* &entry->key */
	uint32		hash;
	char		status;
} PendingRef;

#define SH_PREFIX			pendidx
#define SH_ELEMENT_TYPE		PendingRef
#define SH_KEY_TYPE			const CounterKey *
#define SH_KEY				key
#define SH_HASH_KEY(tb, k)	etab_hash(k)
#define SH_EQUAL(tb, a, b)	(memcmp((a), (b), sizeof(CounterKey)) == 0)
#define SH_STORE_HASH
#define SH_GET_HASH(tb, a)	((a)->hash)
#define SH_SCOPE			static inline
#define SH_DECLARE
#define SH_DEFINE
#include "lib/simplehash.h"

#define OVERFLOW_CACHE		16

typedef struct PendingLevel
{
	int			nest_level;
	MemoryContext cxt;			/* the level and its index */
	MemoryContext datacxt;		/* entries, key strings, latency pairs */
	pendidx_hash *idx;
	PendingEntry *entries;		/* newest first */
	uint32		nentries;
	char	   *bump;			/* free space of the current entry block */
	Size		bump_left;
	char	   *first_block;	/* FIRST_BLOCK_ENTRIES entries, in cxt */
	/* overflow entries by minute % OVERFLOW_CACHE (a COPY spans minutes) */
	PendingEntry *overflow[OVERFLOW_CACHE];
	struct PendingLevel *next;	/* the enclosing level */
} PendingLevel;

static PendingLevel *top_level = NULL;

/*
 * One emptied level kept for the next transaction, so that the common
 * one-statement transaction does not create and destroy a memory context
 * and an index each time.
 */
static PendingLevel *spare_level = NULL;

#define SPARE_MAX_ENTRIES	256
#define FIRST_BLOCK_ENTRIES 4
#define BLOCK_MAX_ENTRIES	256

static Size
pending_entry_size(void)
{
	return MAXALIGN(offsetof(PendingEntry, slots) +
					sizeof(LocalSlot) * apicount_shared->nslots);
}

static inline PendingEntry *
entry_of(const PendingRef *ref)
{
	return (PendingEntry *) unconstify(CounterKey *, ref->key);
}

/* where the level's cached overflow entry of a minute is kept */
static inline PendingEntry **
overflow_slot(PendingLevel *lvl, int32 minute)
{
	return &lvl->overflow[(uint32) minute % OVERFLOW_CACHE];
}

/* allocate entries from the level's own first block again */
static void
rewind_entries(PendingLevel *lvl)
{
	lvl->bump = lvl->first_block;
	lvl->bump_left = FIRST_BLOCK_ENTRIES * pending_entry_size();
}

static PendingLevel *
push_level(int nest_level)
{
	MemoryContext cxt;
	PendingLevel *lvl;

	if (spare_level != NULL)
	{
		lvl = spare_level;
		spare_level = NULL;
		lvl->nest_level = nest_level;
		lvl->next = top_level;
		top_level = lvl;
		return lvl;
	}

	cxt = AllocSetContextCreate(TopMemoryContext, "apicount pending",
								ALLOCSET_SMALL_SIZES);
	lvl = MemoryContextAllocZero(cxt, sizeof(PendingLevel));
	lvl->nest_level = nest_level;
	lvl->cxt = cxt;
	lvl->datacxt = AllocSetContextCreate(cxt, "apicount pending entries",
										 ALLOCSET_SMALL_SIZES);
	lvl->idx = pendidx_create(cxt, 16, NULL);
	lvl->first_block = MemoryContextAlloc(cxt, FIRST_BLOCK_ENTRIES *
										  pending_entry_size());
	rewind_entries(lvl);
	lvl->next = top_level;
	top_level = lvl;
	return lvl;
}

static void
pop_level(void)
{
	PendingLevel *lvl = top_level;

	top_level = lvl->next;
	if (spare_level == NULL && lvl->nentries <= SPARE_MAX_ENTRIES)
	{
		PendingEntry *e;

		for (e = lvl->entries; e != NULL; e = e->next)
			pendidx_delete(lvl->idx, &e->key);
		Assert(lvl->idx->members == 0);
		MemoryContextReset(lvl->datacxt);
		lvl->entries = NULL;
		lvl->nentries = 0;
		rewind_entries(lvl);
		memset(lvl->overflow, 0, sizeof(lvl->overflow));
		lvl->next = NULL;
		spare_level = lvl;
		return;
	}
	MemoryContextDelete(lvl->cxt);
}

/*
 * A zeroed entry from the level's current block.  The first block belongs
 * to the level and is reused with it, so a one-row transaction allocates
 * nothing; later blocks grow with the level (up to BLOCK_MAX_ENTRIES
 * entries), so a large COPY gets entries packed back to back.
 */
static PendingEntry *
alloc_entry(PendingLevel *lvl)
{
	Size		esize = pending_entry_size();
	PendingEntry *e;

	if (lvl->bump_left < esize)
	{
		/* the first block may be used up by entries that failed to link */
		uint32		n = Min(Max(lvl->nentries, FIRST_BLOCK_ENTRIES),
							BLOCK_MAX_ENTRIES);

		lvl->bump = MemoryContextAlloc(lvl->datacxt, n * esize);
		lvl->bump_left = n * esize;
	}
	e = (PendingEntry *) lvl->bump;
	lvl->bump += esize;
	lvl->bump_left -= esize;
	memset(e, 0, esize);
	return e;
}

static char *
copy_string(MemoryContext cxt, const char *s, int len)
{
	char	   *p;

	if (s == NULL)
		return NULL;
	p = MemoryContextAlloc(cxt, len + 1);
	memcpy(p, s, len);
	p[len] = '\0';
	return p;
}

static bool
same_strings(PendingEntry *e, const char *method, int method_len,
			 const char *path, int path_len, const char *user, int user_len)
{
	return e->method_len == method_len && e->path_len == path_len &&
		e->user_len == user_len &&
		memcmp(e->method, method, method_len) == 0 &&
		memcmp(e->path, path, path_len) == 0 &&
		(user_len == 0 || memcmp(e->user, user, user_len) == 0);
}

/*
 * An entry's latencies are sorted (bucket, count) pairs of the buckets in
 * use.  Past LAT_DENSE_FROM buckets in use (a key hit often, such as a
 * minute's overflow entry during a large COPY) the array becomes dense:
 * one pair for every bucket, zero counts included, so that pair i is
 * bucket i and a hit needs no search.  It takes LAT_NBUCKETS pairs
 * (13.5 kB) where the sparse array had 256 or more (4 kB or more), and
 * only an entry with over 256 hits can get there.  Zero counts are skipped
 * where pairs are merged or leave the backend.
 */
#define LAT_DENSE_FROM		256

static inline bool
lat_is_dense(const PendingEntry *e)
{
	return e->lat_n == LAT_NBUCKETS;
}

static void
make_dense(PendingEntry *e, MemoryContext cxt)
{
	LatPair    *dense = MemoryContextAlloc(cxt, LAT_NBUCKETS * sizeof(LatPair));
	int			i;

	for (i = 0; i < LAT_NBUCKETS; i++)
	{
		dense[i].idx = (uint16) i;
		dense[i].count = 0;
	}
	for (i = 0; i < e->lat_n; i++)
		dense[e->lat[i].idx].count = e->lat[i].count;
	if (e->lat != NULL)
		pfree(e->lat);
	e->lat = dense;
	e->lat_n = e->lat_cap = LAT_NBUCKETS;
}

/* drop the zero counts of a dense array (the entry stays sorted) */
static void
make_sparse(PendingEntry *e)
{
	int			n = 0;
	int			i;

	for (i = 0; i < e->lat_n; i++)
		if (e->lat[i].count != 0)
			e->lat[n++] = e->lat[i];
	e->lat_n = n;
}

/* add count to bucket idx of the entry's sorted pairs */
static void
add_latency(PendingEntry *e, MemoryContext cxt, uint16 idx, uint64 count)
{
	int			lo = 0;

	if (lat_is_dense(e))
	{
		e->lat[idx].count += count;
		return;
	}

	/* branch-free lower bound: the buckets of a busy key are unpredictable */
	if (e->lat_n > 0)
	{
		const LatPair *base = e->lat;
		int			n = e->lat_n;

		while (n > 1)
		{
			int			half = n / 2;

			base = (base[half].idx < idx) ? base + half : base;
			n -= half;
		}
		lo = (int) (base - e->lat) + (base->idx < idx);
	}
	if (lo < e->lat_n && e->lat[lo].idx == idx)
	{
		e->lat[lo].count += count;
		return;
	}
	if (e->lat_n == e->lat_cap && e->lat_cap >= LAT_DENSE_FROM)
	{
		make_dense(e, cxt);
		e->lat[idx].count += count;
		return;
	}
	if (e->lat_n == e->lat_cap)
	{
		/* 4, 8, ... LAT_DENSE_FROM; past that the array goes dense above */
		int			cap = e->lat_cap == 0 ? 4 : 2 * e->lat_cap;

		Assert(cap <= LAT_DENSE_FROM);

		e->lat = e->lat_cap == 0 ? MemoryContextAlloc(cxt, cap * sizeof(LatPair))
			: repalloc(e->lat, cap * sizeof(LatPair));
		e->lat_cap = cap;
	}
	memmove(&e->lat[lo + 1], &e->lat[lo], (e->lat_n - lo) * sizeof(LatPair));
	e->lat[lo].idx = idx;
	e->lat[lo].count = count;
	e->lat_n++;
}

static void
add_counts(PendingEntry *e, MemoryContext cxt, const Counts *c)
{
	const CounterDelta *d = c->d;
	int			i;

	for (i = 0; i < c->lat_n; i++)
		if (c->lat[i].count != 0)	/* a dense child has zero counts */
			add_latency(e, cxt, c->lat[i].idx, c->lat[i].count);

	e->d.calls += d->calls;
	e->d.ok += d->ok;
	e->d.client_errors += d->client_errors;
	e->d.server_errors += d->server_errors;
	e->d.lat_count += d->lat_count;
	e->d.lat_sum_ns += d->lat_sum_ns;
	e->d.lat_max_ns = Max(e->d.lat_max_ns, d->lat_max_ns);
	e->d.truncated += d->truncated;
	if (c->slot >= 0)
	{
		e->slots[c->slot].calls += c->slots[0].calls;
		e->slots[c->slot].ok += c->slots[0].ok;
		e->slots[c->slot].errors += c->slots[0].errors;
		return;
	}
	for (i = 0; i < apicount_shared->nslots; i++)
	{
		e->slots[i].calls += c->slots[i].calls;
		e->slots[i].ok += c->slots[i].ok;
		e->slots[i].errors += c->slots[i].errors;
	}
}

static void level_add(PendingLevel *lvl, const CounterKey *key,
					  uint32 hashcode, const char *method, int method_len,
					  const char *path, int path_len,
					  const char *user, int user_len,
					  const Counts *c);

/* count a hit under the minute's overflow key */
static void
add_overflow_local(PendingLevel *lvl, int32 minute, const Counts *c)
{
	/* rows past the level's bound come here one after another */
	PendingEntry *cached = *overflow_slot(lvl, minute);
	CounterKey	okey;

	if (cached != NULL && cached->key.minute == minute)
	{
		add_counts(cached, lvl->datacxt, c);
		return;
	}

	counters_overflow_key(minute, &okey);
	level_add(lvl, &okey, etab_hash(&okey), OVERFLOW_METHOD, strlen(OVERFLOW_METHOD),
			  OVERFLOW_PATH, strlen(OVERFLOW_PATH), NULL, 0, c);
}

/*
 * Add counts for a key to a level.  A different string with the same hash
 * (a 64-bit collision) is routed to the overflow key rather than merged.
 */
static void
level_add(PendingLevel *lvl, const CounterKey *key, uint32 hashcode,
		  const char *method, int method_len,
		  const char *path, int path_len,
		  const char *user, int user_len,
		  const Counts *c)
{
	PendingRef *ref;
	PendingEntry *e;

	ref = pendidx_lookup_hash(lvl->idx, key, hashcode);
	if (ref == NULL)
	{
		bool		found;

		/*
		 * Memory bound: a level never holds more distinct keys than the
		 * shared table has entries, since at commit the surplus would
		 * overflow anyway.  New keys past that count as overflow right away
		 * (totals unchanged).
		 */
		if (!(key->flags & KEY_OVERFLOW) &&
			lvl->nentries >= apicount_shared->capacity)
		{
			add_overflow_local(lvl, key->minute, c);
			return;
		}
		/* the entry is complete before the index refers to it */
		e = alloc_entry(lvl);
		e->key = *key;
		e->hash = hashcode;
		e->method = copy_string(lvl->datacxt, method, method_len);
		e->method_len = method_len;
		e->path = copy_string(lvl->datacxt, path, path_len);
		e->path_len = path_len;
		e->user = copy_string(lvl->datacxt, user, user_len);
		e->user_len = user_len;
		pendidx_insert_hash(lvl->idx, &e->key, hashcode, &found);
		Assert(!found);
		e->next = lvl->entries;
		lvl->entries = e;
		lvl->nentries++;
	}
	else
	{
		e = entry_of(ref);
		if (!same_strings(e, method, method_len, path, path_len,
						  user, user_len))
		{
			add_overflow_local(lvl, key->minute, c);
			return;
		}
	}
	if (key->flags & KEY_OVERFLOW)
		*overflow_slot(lvl, key->minute) = e;
	add_counts(e, lvl->datacxt, c);
}

void
pending_prepare(PendingHit *hit)
{
	hit->keyhash = etab_hash(&hit->key);
	if (top_level != NULL &&
		top_level->nest_level == GetCurrentTransactionNestLevel())
	{
		pendidx_hash *idx = top_level->idx;

#if defined(__GNUC__) || defined(__clang__)
		uint32		home = hit->keyhash & idx->sizemask;

		/* a probe runs on past its first slot about as often as not */
		__builtin_prefetch(&idx->data[home]);
		__builtin_prefetch(&idx->data[(home + 3) & idx->sizemask]);
#endif
	}
}

void
pending_add(const PendingHit *hit)
{
	int			nest = GetCurrentTransactionNestLevel();
	CounterDelta d;
	LocalSlot	slot;
	LatPair		lat;
	Counts		c;
	bool		ok = false;
	bool		client_error = false;
	bool		server_error = false;

	Assert(hit->keyhash == etab_hash(&hit->key));	/* pending_prepare ran */
	if (top_level == NULL || top_level->nest_level < nest)
		push_level(nest);

	memset(&d, 0, sizeof(d));
	d.calls = 1;
	d.truncated = hit->truncated;
	if (hit->status >= 100 && hit->status < 400)
		ok = true;
	else if (hit->status >= 400 && hit->status < 500)
		client_error = true;
	else if (hit->status >= 500)
		server_error = true;
	d.ok = ok;
	d.client_errors = client_error;
	d.server_errors = server_error;
	if (hit->has_latency)
	{
		d.lat_count = 1;
		d.lat_sum_ns = hit->latency_ns;
		d.lat_max_ns = hit->latency_ns;
		lat.idx = (uint16) lat_bucket_of(hit->latency_ns);
		lat.count = 1;
	}
	slot.calls = 1;
	slot.ok = ok;
	slot.errors = client_error || server_error;
	c.d = &d;
	c.slots = &slot;
	c.slot = hit->slot;
	c.lat = &lat;
	c.lat_n = hit->has_latency ? 1 : 0;

	level_add(top_level, &hit->key, hit->keyhash, hit->method, hit->method_len,
			  hit->path, hit->path_len, hit->user, hit->user_len, &c);
}

static bool
pending_is_empty(void)
{
	PendingLevel *lvl;

	for (lvl = top_level; lvl != NULL; lvl = lvl->next)
		if (lvl->nentries > 0)
			return false;
	return true;
}

static void
merge_level_into_parent(void)
{
	PendingLevel *child = top_level;
	PendingLevel *parent = child->next;
	PendingEntry *e;

	for (e = child->entries; e != NULL; e = e->next)
	{
		Counts		c;

		c.d = &e->d;
		c.slots = e->slots;
		c.slot = -1;
		c.lat = e->lat;
		c.lat_n = e->lat_n;
		level_add(parent, &e->key, e->hash, e->method, e->method_len,
				  e->path, e->path_len, e->user, e->user_len, &c);
	}
	pop_level();
}

static void
discard_all(void)
{
	while (top_level != NULL)
		pop_level();
}

/* runs after the commit record: must not throw */
static void
merge_into_shared(void)
{
	PendingLevel *lvl;

	for (lvl = top_level; lvl != NULL; lvl = lvl->next)
	{
		PendingEntry *e;

		for (e = lvl->entries; e != NULL; e = e->next)
		{
			CountedUnder under = counters_add(&e->key, e->hash, e->method, e->method_len,
											  e->path, e->path_len,
											  e->user, e->user_len,
											  &e->d, e->slots);

			if (lat_is_dense(e))
				make_sparse(e); /* the entry goes after this */
			if (e->lat_n == 0)
				continue;
			if (under == COUNTED_KEY)
				latstore_add(e->key.method_h, e->key.path_h, e->key.minute,
							 e->lat, e->lat_n);
			else if (under == COUNTED_OVERFLOW)
				latstore_add(apicount_overflow_method_h, apicount_overflow_path_h,
							 e->key.minute, e->lat, e->lat_n);
			else
				latstore_add_unbinned(e->lat, e->lat_n);
		}
	}
}

static void
pending_xact_callback(XactEvent event, void *arg)
{
	if (top_level == NULL)
		return;

	switch (event)
	{
		case XACT_EVENT_COMMIT:
			merge_into_shared();
			discard_all();
			break;
		case XACT_EVENT_ABORT:
		case XACT_EVENT_PREPARE:
			discard_all();
			break;
		case XACT_EVENT_PRE_PREPARE:
			if (!pending_is_empty())
				ereport(ERROR,
						(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
						 errmsg("cannot PREPARE a transaction that has recorded apicount hits"),
						 errdetail("Hits are merged into shared memory at commit, which a prepared transaction would defer past a restart."),
						 errhint("Record hits in a transaction that commits directly.")));
			break;
		default:
			break;
	}
}

static void
pending_subxact_callback(SubXactEvent event, SubTransactionId mySubid,
						 SubTransactionId parentSubid, void *arg)
{
	int			nest;

	if (top_level == NULL)
		return;
	nest = GetCurrentTransactionNestLevel();

	switch (event)
	{
		case SUBXACT_EVENT_COMMIT_SUB:
			if (top_level->nest_level >= nest)
			{
				if (top_level->next != NULL &&
					top_level->next->nest_level == nest - 1)
					merge_level_into_parent();
				else
					top_level->nest_level = nest - 1;
			}
			break;
		case SUBXACT_EVENT_ABORT_SUB:
			while (top_level != NULL && top_level->nest_level >= nest)
				pop_level();
			break;
		default:
			break;
	}
}

void
pending_register_callbacks(void)
{
	RegisterXactCallback(pending_xact_callback, NULL);
	RegisterSubXactCallback(pending_subxact_callback, NULL);
}

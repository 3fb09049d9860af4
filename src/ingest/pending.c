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
 * key's own, or an "(other)" path when the API tier had no room.
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
#include "prefault.h"
#include "sources.h"
#include "strtab.h"

/* latency pairs an entry holds in itself (most keys of a COPY have one) */
#define LAT_INLINE			2

static inline void
prefetch_line(const void *p)
{
#if defined(__GNUC__) || defined(__clang__)
	__builtin_prefetch(p);
#endif
}

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
	int16		one_slot;		/* with slots NULL: the slot of every hit,
								 * or -1 before the first */
	bool		audited;		/* its API is audited (audited.h) */
	LatPair    *lat;			/* sorted by idx: lat_inline, or in the
								 * level's datacxt past LAT_INLINE pairs;
								 * dense (below) when lat_n == LAT_NBUCKETS */
	LatPair		lat_inline[LAT_INLINE];	/* the pairs of a key hit rarely */
	LocalSlot  *slots;			/* per-slot counts in the level's datacxt, or
								 * NULL while all hits fell in one_slot */
	CounterDelta d;
} PendingEntry;

/*
 * Most keys of a transaction are hit within one slot (one row, or a few
 * rows seconds apart), so an entry starts without per-slot counts: while
 * every hit falls in one_slot, that slot's counts are the entry's totals
 * (calls, ok, and client plus server errors).  A hit in a second slot
 * spreads them into an array of every slot.  This halves the entry, and
 * a COPY of many keys writes half the memory.  one_slot is claimed (and
 * the slots spread) before counts are added, so that the allocation may
 * fail with nothing counted: a claimed slot may have no counts yet.
 */

StaticAssertDecl(offsetof(PendingEntry, key) == 0,
				 "a pending entry must start with its key");

/*
 * The level's index: open addressing (lib/simplehash.h), 16 bytes a key,
 * holding the key's hash and a pointer to its entry.  A lookup compares
 * stored hashes first and reads an entry only on a hash match, so a key
 * that is not there (most rows of a COPY once the level is full) costs one
 * probe of a compact array rather than a walk through 216-byte entries.
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
#define SH_FILLFACTOR		(0.5)	/* lookups of absent keys stop early */
#define SH_SCOPE			static inline
#define SH_USE_NONDEFAULT_ALLOCATOR
#define SH_DECLARE
#define SH_DEFINE
#include "lib/simplehash.h"

/*
 * simplehash's allocator, but a large array is mapped in one call before
 * it is zeroed: a COPY grows the index to megabytes.
 */
static inline void *
pendidx_allocate(pendidx_hash *tb, Size size)
{
	void	   *p = prefault_alloc_large(tb->ctx, size);

	memset(p, 0, size);
	/* the array's size, for pop_level (private_data: &level->idx_bytes) */
	*(Size *) tb->private_data = size;
	return p;
}

static inline void
pendidx_free(pendidx_hash *tb, void *pointer)
{
	prefault_free_large(pointer);
}

#define OVERFLOW_CACHE		16
#define FOLD_CACHE			4096

/* a caller key's API whose entry holds it once the level is at its bound */
typedef struct FoldCacheSlot
{
	uint64		method_h;
	uint64		path_h;
	int32		minute;
	PendingEntry *entry;
} FoldCacheSlot;

typedef struct PendingLevel
{
	int			nest_level;
	MemoryContext cxt;			/* the level and its index */
	MemoryContext datacxt;		/* entries, key strings, latency pairs */
	pendidx_hash *idx;
	Size		idx_bytes;		/* of idx->data, set by pendidx_allocate */
	PendingEntry *entries;		/* newest first */
	uint32		nentries;
	char	   *bump;			/* free space of the current entry block */
	Size		bump_left;
	char	   *first_block;	/* FIRST_BLOCK_ENTRIES entries, in cxt */
	/* catch-all entries by minute % OVERFLOW_CACHE (a COPY spans minutes) */
	PendingEntry *overflow[OVERFLOW_CACHE];
	/* folded callers' entries, made at the first fold (a COPY past the bound) */
	FoldCacheSlot *fold_cache;
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
#define BLOCK_MAX_ENTRIES	4096	/* 0.9 MB */
#define LARGE_BLOCKS_FROM	8192	/* entries; then blocks of: */
#define LARGE_BLOCK_BYTES	(2 * PREFAULT_HUGE_BYTES)

static Size
pending_entry_size(void)
{
	return MAXALIGN(sizeof(PendingEntry));
}

static inline PendingEntry *
entry_of(const PendingRef *ref)
{
	return (PendingEntry *) unconstify(CounterKey *, ref->key);
}

/* where the level's cached catch-all entry of a minute is kept */
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
	lvl->idx = pendidx_create(cxt, 16, &lvl->idx_bytes);
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

	/*
	 * Kept for reuse only when its index is whole: simplehash sets the new
	 * size before allocating the grown array, so an allocation that failed
	 * leaves the old array under the new size.
	 */
	if (spare_level == NULL && lvl->nentries <= SPARE_MAX_ENTRIES &&
		lvl->idx_bytes == (Size) lvl->idx->size * sizeof(PendingRef))
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
		lvl->fold_cache = NULL; /* was in datacxt */
		lvl->next = NULL;
		spare_level = lvl;
		return;
	}
	MemoryContextDelete(lvl->cxt);
}

/*
 * size bytes (a multiple of MAXALIGN) from the level's current block: an
 * entry and its strings, side by side.  The first block belongs to the
 * level and is reused with it, so a one-row transaction with strings of
 * ordinary length allocates nothing;
 * later blocks grow with the level (up to BLOCK_MAX_ENTRIES entries), so a
 * large COPY gets its entries packed back to back, in blocks mapped at
 * once (prefault.h); past LARGE_BLOCKS_FROM entries, in 4 MB blocks on
 * 2 MB pages where the kernel offers them.
 */
static char *
level_take(PendingLevel *lvl, Size size)
{
	char	   *p;

	if (lvl->bump_left < size)
	{
		Size		bytes;

		if (lvl->nentries >= LARGE_BLOCKS_FROM && size <= LARGE_BLOCK_BYTES)
		{
			/* a COPY of many keys: 2 MB pages where the kernel has them */
			bytes = LARGE_BLOCK_BYTES;
			lvl->bump = prefault_alloc_large(lvl->datacxt, bytes);
		}
		else
		{
			/*
			 * n is at least FIRST_BLOCK_ENTRIES: the first block may be used up
			 * by long strings, or by entries that failed to link
			 */
			uint32		n = Min(Max(lvl->nentries, FIRST_BLOCK_ENTRIES),
								BLOCK_MAX_ENTRIES);

			bytes = Max((Size) n * pending_entry_size(), size);
			lvl->bump = MemoryContextAlloc(lvl->datacxt, bytes);
			prefault_for_write(lvl->bump, bytes);
		}
		lvl->bump_left = bytes;
	}
	p = lvl->bump;
	lvl->bump += size;
	lvl->bump_left -= size;
	return p;
}

/* the room a key string takes after its entry (none for a null one) */
static inline Size
string_room(const char *s, int len)
{
	return s == NULL ? 0 : MAXALIGN(len + 1);
}

/* copy a key string to *room, which moves past it */
static char *
put_string(char **room, const char *s, int len)
{
	char	   *p = *room;

	if (s == NULL)
		return NULL;
	memcpy(p, s, len);
	p[len] = '\0';
	*room += MAXALIGN(len + 1);
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
	if (e->lat != NULL && e->lat != e->lat_inline)
		pfree(e->lat);
	e->lat = dense;
	e->lat_n = e->lat_cap = LAT_NBUCKETS;
}

/*
 * Drop the zero counts of a dense array, or of pairs reserved by a merge
 * that failed (the entry stays sorted).
 */
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

/* the entry's sparse pairs, with room for one more (may throw) */
static void
grow_latency(PendingEntry *e, MemoryContext cxt)
{
	/* LAT_INLINE, 4, 8, ... LAT_DENSE_FROM; then dense (add_latency) */
	int			cap = e->lat_cap == 0 ? LAT_INLINE : 2 * e->lat_cap;

	Assert(cap <= LAT_DENSE_FROM);

	if (e->lat_cap == 0)
		e->lat = e->lat_inline;
	else if (e->lat == e->lat_inline)
	{
		LatPair    *p = MemoryContextAlloc(cxt, cap * sizeof(LatPair));

		memcpy(p, e->lat_inline, e->lat_n * sizeof(LatPair));
		e->lat = p;
	}
	else
		e->lat = repalloc(e->lat, cap * sizeof(LatPair));
	e->lat_cap = cap;
}

/*
 * Add count to bucket idx of the entry's sorted pairs.  Allocates (and so
 * may throw) only when idx has no pair yet: a pair added with count 0
 * reserves it.
 */
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
		grow_latency(e, cxt);
	memmove(&e->lat[lo + 1], &e->lat[lo], (e->lat_n - lo) * sizeof(LatPair));
	e->lat[lo].idx = idx;
	e->lat[lo].count = count;
	e->lat_n++;
}

/* the counts of one slot of an entry whose hits all fell in one_slot */
static inline LocalSlot
one_slot_counts(const PendingEntry *e)
{
	LocalSlot	s;

	s.calls = (uint32) e->d.calls;
	s.ok = (uint32) e->d.ok;
	s.errors = (uint32) (e->d.client_errors + e->d.server_errors);
	return s;
}

/* give the entry an array of every slot's counts (may throw: no memory) */
static void
spread_slots(PendingEntry *e, MemoryContext cxt)
{
	LocalSlot  *slots = MemoryContextAllocZero(cxt, sizeof(LocalSlot) *
											   apicount_shared->nslots);

	if (e->one_slot >= 0)
		slots[e->one_slot] = one_slot_counts(e);
	e->slots = slots;
}

/*
 * Make room for hits of slot in the entry's slot counts: keep the one
 * slot, or spread.  Called before any count changes, so that a failed
 * allocation leaves the entry as it was.
 */
static inline void
prepare_slot(PendingEntry *e, MemoryContext cxt, int slot)
{
	if (e->slots != NULL)
		return;
	if (e->one_slot < 0)
		e->one_slot = (int16) slot;
	else if (e->one_slot != slot)
		spread_slots(e, cxt);
}

/* the slot counts of an entry as an array (buf when it has one slot) */
static const LocalSlot *
slots_of(const PendingEntry *e, LocalSlot *buf)
{
	if (e->slots != NULL)
		return e->slots;
	memset(buf, 0, sizeof(LocalSlot) * apicount_shared->nslots);
	if (e->one_slot >= 0)
		buf[e->one_slot] = one_slot_counts(e);
	return buf;
}

/*
 * Make e ready to take a child level's entry's counts without allocating:
 * its slot claimed or its slots spread, a pair (count 0) for each of the
 * child's latency buckets.  May throw, having changed no count.
 */
static void
reserve_counts(PendingEntry *e, MemoryContext cxt, const PendingEntry *child)
{
	int			i;

	if (child->slots != NULL)
	{
		if (e->slots == NULL)
			spread_slots(e, cxt);
	}
	else if (child->one_slot >= 0)
		prepare_slot(e, cxt, child->one_slot);
	for (i = 0; i < child->lat_n; i++)
		if (child->lat[i].count != 0)	/* a dense child has zero counts */
			add_latency(e, cxt, child->lat[i].idx, 0);
}

/*
 * Add the counts of a child level's entry to e, where reserve_counts made
 * room for them: allocates nothing, so never throws.
 */
static void
add_counts(PendingEntry *e, MemoryContext cxt, const PendingEntry *child)
{
	const CounterDelta *d = &child->d;
	int			i;

	for (i = 0; i < child->lat_n; i++)
		if (child->lat[i].count != 0)
			add_latency(e, cxt, child->lat[i].idx, child->lat[i].count);

	e->d.calls += d->calls;
	e->d.ok += d->ok;
	e->d.client_errors += d->client_errors;
	e->d.server_errors += d->server_errors;
	e->d.lat_count += d->lat_count;
	e->d.lat_sum_ns += d->lat_sum_ns;
	e->d.lat_max_ns = Max(e->d.lat_max_ns, d->lat_max_ns);
	e->d.truncated += d->truncated;

	/* with no slots of its own, e's one slot is the totals just added */
	if (e->slots != NULL)
	{
		LocalSlot	buf[APICOUNT_MAX_SLOTS];
		const LocalSlot *cs = slots_of(child, buf);

		for (i = 0; i < apicount_shared->nslots; i++)
		{
			e->slots[i].calls += cs[i].calls;
			e->slots[i].ok += cs[i].ok;
			e->slots[i].errors += cs[i].errors;
		}
	}
}

static PendingEntry *level_entry(PendingLevel *lvl, const CounterKey *key,
								 uint32 hashcode, const char *method,
								 int method_len, const char *path,
								 int path_len, const char *user,
								 int user_len, bool audited);

/* the level's entry of the minute's catch-all key ("*", "(other)") */
static PendingEntry *
catchall_entry(PendingLevel *lvl, int32 minute)
{
	/* rows past the level's bounds may come here one after another */
	PendingEntry *cached = *overflow_slot(lvl, minute);
	CounterKey	okey;

	if (cached != NULL && cached->key.minute == minute)
		return cached;

	counters_catchall_key(minute, &okey);
	return level_entry(lvl, &okey, etab_hash(&okey), ANY_METHOD,
					   strlen(ANY_METHOD), OTHER_PATH,
					   strlen(OTHER_PATH), NULL, 0, false);
}

static inline bool
is_catchall(const CounterKey *key)
{
	return key->path_h == apicount_other_path_h &&
		key->method_h == apicount_any_method_h;
}

/*
 * pending_add's hint to folded_entry: the hash of the folded key of the
 * caller key fold_hint_key, computed by pending_prepare.  folded_entry uses
 * it only for that very key, so a hint left behind by an error is never
 * applied to another key.
 */
static bool fold_hint_valid = false;
static CounterKey fold_hint_key;
static uint32 fold_hash_hint = 0;

/* the key that holds a caller key's hits past the level's bound */
static inline void
folded_key(const CounterKey *key, CounterKey *fk)
{
	counters_api_key(key, fk);
	fk->flags = KEY_FOLDED;
}

/*
 * Rows past the bound come one after another in a large COPY, and most
 * find the entry of a recent row's API: a direct-mapped cache by (minute,
 * method, path) spares the hash and the index probe.
 */
static inline FoldCacheSlot *
fold_slot_of(PendingLevel *lvl, const CounterKey *key)
{
	uint64		mix = (key->path_h ^ (key->method_h * 31) ^
					   ((uint64) (uint32) key->minute * UINT64CONST(0x9E3779B97F4A7C15)));

	return &lvl->fold_cache[(mix >> 32) % FOLD_CACHE];
}

static inline bool
fold_slot_holds(const FoldCacheSlot *slot, const CounterKey *key)
{
	return slot->entry != NULL && slot->minute == key->minute &&
		slot->path_h == key->path_h && slot->method_h == key->method_h;
}

/*
 * Memory bound: a level never holds more distinct keys than the shared
 * tiers have entries, since at commit the surplus would be folded anyway;
 * so keys past the bounds are folded here, the way the tiers fold them
 * (totals unchanged).  A caller key past apicount.max_entries keys becomes
 * its API's key (KEY_FOLDED: "(other callers)"); an API key past that plus
 * apicount.max_apis becomes its method's "(other)"; past the reserve too,
 * the catch-all, which is made whatever the count (one per minute).
 */
static PendingEntry *
folded_entry(PendingLevel *lvl, const CounterKey *key,
			 const char *method, int method_len,
			 const char *path, int path_len, bool audited)
{
	CounterKey	fk;

	if (key->flags & KEY_TRACKED)
	{
		FoldCacheSlot *slot;
		PendingEntry *e;
		uint32		hash;

		if (lvl->fold_cache == NULL)
			lvl->fold_cache = MemoryContextAllocZero(lvl->datacxt,
													 sizeof(FoldCacheSlot) * FOLD_CACHE);
		slot = fold_slot_of(lvl, key);
		if (fold_slot_holds(slot, key))
			return slot->entry;
		folded_key(key, &fk);
		if (fold_hint_valid &&
			memcmp(&fold_hint_key, key, sizeof(CounterKey)) == 0)
			hash = fold_hash_hint;
		else
			hash = etab_hash(&fk);
		fold_hint_valid = false;
		Assert(hash == etab_hash(&fk));
		e = level_entry(lvl, &fk, hash, method, method_len, path, path_len,
						NULL, 0, audited);
		slot->method_h = key->method_h;
		slot->path_h = key->path_h;
		slot->minute = key->minute;
		slot->entry = e;
		return e;
	}
	if (!(key->flags & KEY_OVERFLOW))
	{
		counters_other_path_key(key->minute, key->method_h, &fk);
		fk.flags = KEY_OVERFLOW | (key->flags & KEY_FOLDED);
		return level_entry(lvl, &fk, etab_hash(&fk), method, method_len,
						   OTHER_PATH, strlen(OTHER_PATH), NULL, 0, false);
	}
	return catchall_entry(lvl, key->minute);
}

/*
 * The entry of a level that counts for a key: the key's own, created if
 * needed, or a folded key's when the level is at its bound (folded_entry).
 * A different string with the same hash (a 64-bit collision) is routed to
 * the catch-all key rather than merged.
 */
static PendingEntry *
level_entry(PendingLevel *lvl, const CounterKey *key, uint32 hashcode,
			const char *method, int method_len,
			const char *path, int path_len,
			const char *user, int user_len, bool audited)
{
	PendingRef *ref;
	PendingEntry *e;

	ref = pendidx_lookup_hash(lvl->idx, key, hashcode);
	if (ref == NULL)
	{
		bool		found;
		Size		esize = pending_entry_size();
		char	   *room;
		int64		bound = apicount_shared->capacity;

		if (!(key->flags & KEY_TRACKED))
			bound += apicount_shared->api_capacity;
		if (key->flags & KEY_OVERFLOW)
			bound += OVERFLOW_RESERVE;
		if (audited)
			bound += apicount_shared->audited_capacity;
		if (lvl->nentries >= bound && !is_catchall(key))
			return folded_entry(lvl, key, method, method_len, path, path_len,
								audited);
		/* the entry is complete before the index refers to it */
		e = (PendingEntry *) level_take(lvl, esize +
										string_room(method, method_len) +
										string_room(path, path_len) +
										string_room(user, user_len));
		memset(e, 0, esize);
		room = (char *) e + esize;
		e->key = *key;
		e->hash = hashcode;
		e->one_slot = -1;
		e->method = put_string(&room, method, method_len);
		e->method_len = method_len;
		e->path = put_string(&room, path, path_len);
		e->path_len = path_len;
		e->user = put_string(&room, user, user_len);
		e->user_len = user_len;
		e->audited = audited;
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
			return catchall_entry(lvl, key->minute);
	}
	if (is_catchall(key))
		*overflow_slot(lvl, key->minute) = e;
	return e;
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
		uint32		next = (home + 1) & idx->sizemask;
		const char *first = (const char *) &idx->data[home];
		const char *second = (const char *) &idx->data[next];

		/*
		 * At the index's fill factor a probe reads one or two slots; the
		 * second only costs a load when it is on another cache line.
		 */
		__builtin_prefetch(first);
		if ((uintptr_t) first / PG_CACHE_LINE_SIZE !=
			(uintptr_t) second / PG_CACHE_LINE_SIZE)
			__builtin_prefetch(second);
#endif
		hit->has_fold_hash = false;
		if ((hit->key.flags & KEY_TRACKED) &&
			top_level->nentries >= apicount_shared->capacity)
		{
			CounterKey	fk;

			folded_key(&hit->key, &fk);
			hit->fold_hash = etab_hash(&fk);
			hit->has_fold_hash = true;
			prefetch_line(&idx->data[hit->fold_hash & idx->sizemask]);
		}
	}
	else
		hit->has_fold_hash = false;
}

/* the index element of the folded key of a hit, if in the first slots */
static inline const PendingRef *
fold_ref(const PendingHit *hit)
{
	pendidx_hash *idx = top_level->idx;
	uint32		pos = hit->fold_hash & idx->sizemask;
	int			i;

	for (i = 0; i < 4; i++)
	{
		const PendingRef *ref = &idx->data[pos];

		if (ref->status != pendidx_SH_IN_USE)
			return NULL;
		if (ref->hash == hit->fold_hash)
			return ref;
		pos = (pos + 1) & idx->sizemask;
	}
	return NULL;
}

/*
 * Past the level's bound, most rows of a COPY count on a folded entry
 * found through the fold cache: pending_prepare started loading the
 * cache slot; a few rows later the entry it names is loaded, and a few
 * rows after that its latency pairs, so that pending_add finds them all
 * in cache (a software pipeline, as the index slot's prefetch).
 */
void
pending_prefetch_fold(const PendingHit *hit, int stage)
{
	const PendingRef *ref;
	const PendingEntry *e;

	if (!hit->has_fold_hash || top_level == NULL ||
		top_level->nest_level != GetCurrentTransactionNestLevel() ||
		(ref = fold_ref(hit)) == NULL)
		return;
	e = entry_of((PendingRef *) ref);
	if (stage == 1)
	{
		prefetch_line(e);
		prefetch_line((const char *) e + offsetof(PendingEntry, lat_inline));
	}
	else if (e->lat != NULL && e->lat != e->lat_inline && !lat_is_dense(e))
	{
		prefetch_line(e->lat);
		prefetch_line((const char *) e->lat + PG_CACHE_LINE_SIZE);
		if (e->lat_n > 8)
		{
			prefetch_line((const char *) e->lat + 2 * PG_CACHE_LINE_SIZE);
			prefetch_line((const char *) e->lat + 3 * PG_CACHE_LINE_SIZE);
		}
	}
}

void
pending_add(const PendingHit *hit)
{
	int			nest = GetCurrentTransactionNestLevel();
	PendingEntry *e;
	LocalSlot  *slot;
	bool		ok = hit->status >= 100 && hit->status < 400;
	bool		error = hit->status >= 400;

	Assert(hit->keyhash == etab_hash(&hit->key));	/* pending_prepare ran */
	if (top_level == NULL || top_level->nest_level < nest)
		push_level(nest);

	fold_hint_valid = hit->has_fold_hash;
	if (fold_hint_valid)
	{
		fold_hint_key = hit->key;
		fold_hash_hint = hit->fold_hash;
	}
	e = level_entry(top_level, &hit->key, hit->keyhash,
					hit->method, hit->method_len, hit->path, hit->path_len,
					hit->user, hit->user_len, hit->audited);
	fold_hint_valid = false;

	/*
	 * One hit: the counts of add_counts, added in place.  The slot and the
	 * latency bucket first, since they may allocate (and fail) where nothing
	 * else can.
	 */
	prepare_slot(e, top_level->datacxt, hit->slot);
	if (hit->has_latency)
	{
		if (lat_is_dense(e))	/* the overflow entry of a COPY, say */
			e->lat[lat_bucket_of(hit->latency_ns)].count++;
		else
			add_latency(e, top_level->datacxt,
						(uint16) lat_bucket_of(hit->latency_ns), 1);
		e->d.lat_count++;
		e->d.lat_sum_ns += hit->latency_ns;
		e->d.lat_max_ns = Max(e->d.lat_max_ns, hit->latency_ns);
	}
	e->d.calls++;
	e->d.ok += ok;
	e->d.client_errors += error && hit->status < 500;
	e->d.server_errors += hit->status >= 500;
	e->d.truncated += hit->truncated;
	if (e->slots != NULL)
	{
		slot = &e->slots[hit->slot];
		slot->calls++;
		slot->ok += ok;
		slot->errors += error;
	}
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

/* the entry of the parent level that counts for a child's entry */
static inline PendingEntry *
parent_entry(PendingLevel *parent, const PendingEntry *e)
{
	return level_entry(parent, &e->key, e->hash, e->method, e->method_len,
					   e->path, e->path_len, e->user, e->user_len,
					   e->audited);
}

static void
merge_level_into_parent(void)
{
	PendingLevel *child = top_level;
	PendingLevel *parent = child->next;
	PendingEntry *e;

	/*
	 * First the parent's entries and their room, which may throw (no memory)
	 * with nothing of the child counted; then the counts, which cannot.  The
	 * second lookup of each key finds the entry the first made (or the same
	 * overflow entry).  Entries left with no calls by a failure here are
	 * skipped at commit.
	 */
	for (e = child->entries; e != NULL; e = e->next)
		reserve_counts(parent_entry(parent, e), parent->datacxt, e);
	for (e = child->entries; e != NULL; e = e->next)
		add_counts(parent_entry(parent, e), parent->datacxt, e);
	pop_level();
}

static void
discard_all(void)
{
	while (top_level != NULL)
		pop_level();
}

/* entries ahead of the one merged whose shared index slot is prefetched */
#define MERGE_PREFETCH_AHEAD	4

/*
 * Runs after the commit record: must not throw.  The entries' strings stay
 * in place until the end, as the string table's batch requires.
 */
static void
merge_into_shared(void)
{
	PendingLevel *lvl;
	uint32		nkeys = 0;

	for (lvl = top_level; lvl != NULL; lvl = lvl->next)
		nkeys += lvl->nentries;
	etab_prefault_free(nkeys);

	strtab_batch_begin();
	for (lvl = top_level; lvl != NULL; lvl = lvl->next)
	{
		PendingEntry *e;
		PendingEntry *ahead = lvl->entries;
		int			i;

		for (i = 0; i < MERGE_PREFETCH_AHEAD && ahead != NULL; i++)
		{
			etab_prefetch(ahead->hash);
			ahead = ahead->next;
		}
		for (e = lvl->entries; e != NULL; e = e->next)
		{
			CountedUnder under;
			LocalSlot	buf[APICOUNT_MAX_SLOTS];
			uint64		api_method_h;
			uint64		api_path_h;

			if (ahead != NULL)
			{
				etab_prefetch(ahead->hash);
				ahead = ahead->next;
			}
			if (e->d.calls == 0)
				continue;		/* made by a savepoint merge that failed */
			under = counters_add(&e->key, e->hash, e->method, e->method_len,
								 e->path, e->path_len, e->user, e->user_len,
								 &e->d, slots_of(e, buf), e->audited,
								 &api_method_h, &api_path_h);

			make_sparse(e);		/* the entry goes after this */
			if (e->lat_n == 0)
				continue;
			if (under != COUNTED_SPILL)
				latstore_add(api_method_h, api_path_h, e->key.minute,
							 e->lat, e->lat_n);
			else
				latstore_add_unbinned(e->lat, e->lat_n);
		}
	}
	strtab_batch_end();
}

static void
pending_xact_callback(XactEvent event, void *arg)
{
	if (top_level == NULL)
	{
		sources_xact_end(event);	/* a shipped batch with no hits */
		return;
	}

	switch (event)
	{
		case XACT_EVENT_COMMIT:
			/* a shipped position goes in with its hits (sources.h) */
			sources_commit_begin();
			merge_into_shared();
			sources_commit_end();
			discard_all();
			break;
		case XACT_EVENT_ABORT:
		case XACT_EVENT_PREPARE:
			discard_all();
			sources_xact_end(event);
			break;
		case XACT_EVENT_PRE_PREPARE:
			sources_xact_end(event);
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

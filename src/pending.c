/*-------------------------------------------------------------------------
 * pending.c
 *		Per-transaction local counts and their merge at commit.
 *
 * Owns the stack of savepoint levels.  Each level is a small hash of
 * key -> counts in its own memory context; a released savepoint merges its
 * level into its parent, a rolled-back one deletes it, and the top-level
 * commit merges everything into shared memory (counters_add), one call per
 * distinct key, so a COPY of a million rows costs one merge per key.
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
#include "latency_store.h"
#include "pending.h"

typedef struct PendingEntry
{
	CounterKey	key;
	char	   *method;
	char	   *path;
	char	   *user;
	int16		method_len;
	int16		path_len;
	int16		user_len;
	int16		lat_n;			/* latency buckets used */
	int16		lat_cap;
	LatPair    *lat;			/* sorted by idx, in the level's strcxt */
	CounterDelta d;
	LocalSlot	slots[FLEXIBLE_ARRAY_MEMBER];
} PendingEntry;

typedef struct PendingLevel
{
	int			nest_level;
	MemoryContext cxt;			/* the level and its hash table */
	MemoryContext strcxt;		/* copies of the key strings */
	HTAB	   *tab;
	struct PendingLevel *next;	/* the enclosing level */
} PendingLevel;

static PendingLevel *top_level = NULL;

/*
 * One emptied level kept for the next transaction, so that the common
 * one-statement transaction does not create and destroy a memory context
 * and a hash table each time.
 */
static PendingLevel *spare_level = NULL;

#define SPARE_MAX_ENTRIES	256

static Size
pending_entry_size(void)
{
	return offsetof(PendingEntry, slots) +
		sizeof(LocalSlot) * apicount_shared->nslots;
}

static PendingLevel *
push_level(int nest_level)
{
	MemoryContext cxt;
	PendingLevel *lvl;
	HASHCTL		ctl;

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
	lvl->strcxt = AllocSetContextCreate(cxt, "apicount pending strings",
										ALLOCSET_SMALL_SIZES);
	memset(&ctl, 0, sizeof(ctl));
	ctl.keysize = sizeof(CounterKey);
	ctl.entrysize = pending_entry_size();
	ctl.hcxt = cxt;
	lvl->tab = hash_create("apicount pending hits", 16, &ctl,
						   HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
	lvl->next = top_level;
	top_level = lvl;
	return lvl;
}

static void
pop_level(void)
{
	PendingLevel *lvl = top_level;

	top_level = lvl->next;
	if (spare_level == NULL &&
		hash_get_num_entries(lvl->tab) <= SPARE_MAX_ENTRIES)
	{
		HASH_SEQ_STATUS seq;
		PendingEntry *e;

		hash_seq_init(&seq, lvl->tab);
		while ((e = hash_seq_search(&seq)) != NULL)
			hash_search(lvl->tab, &e->key, HASH_REMOVE, NULL);
		MemoryContextReset(lvl->strcxt);
		lvl->next = NULL;
		spare_level = lvl;
		return;
	}
	MemoryContextDelete(lvl->cxt);
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

/* add count to bucket idx of the entry's sorted pairs */
static void
add_latency(PendingEntry *e, MemoryContext cxt, uint16 idx, uint64 count)
{
	int			lo = 0,
				hi = e->lat_n;

	while (lo < hi)
	{
		int			mid = (lo + hi) / 2;

		if (e->lat[mid].idx < idx)
			lo = mid + 1;
		else
			hi = mid;
	}
	if (lo < e->lat_n && e->lat[lo].idx == idx)
	{
		e->lat[lo].count += count;
		return;
	}
	if (e->lat_n == e->lat_cap)
	{
		int			cap = e->lat_cap == 0 ? 4 : Min(e->lat_cap * 2, LAT_NBUCKETS);

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
add_counts(PendingEntry *e, MemoryContext cxt, const CounterDelta *d,
		   const LocalSlot *slots, const LatPair *lat, int lat_n)
{
	int			i;

	for (i = 0; i < lat_n; i++)
		add_latency(e, cxt, lat[i].idx, lat[i].count);

	e->d.calls += d->calls;
	e->d.ok += d->ok;
	e->d.client_errors += d->client_errors;
	e->d.server_errors += d->server_errors;
	e->d.lat_count += d->lat_count;
	e->d.lat_sum_ns += d->lat_sum_ns;
	e->d.lat_max_ns = Max(e->d.lat_max_ns, d->lat_max_ns);
	e->d.truncated += d->truncated;
	for (i = 0; i < apicount_shared->nslots; i++)
	{
		e->slots[i].calls += slots[i].calls;
		e->slots[i].ok += slots[i].ok;
		e->slots[i].errors += slots[i].errors;
	}
}

static void level_add(PendingLevel *lvl, const CounterKey *key,
					  const char *method, int method_len,
					  const char *path, int path_len,
					  const char *user, int user_len,
					  const CounterDelta *d, const LocalSlot *slots,
					  const LatPair *lat, int lat_n);

/* count a hit under the minute's overflow key */
static void
add_overflow_local(PendingLevel *lvl, int32 minute, const CounterDelta *d,
				   const LocalSlot *slots, const LatPair *lat, int lat_n)
{
	CounterKey	okey;

	counters_overflow_key(minute, &okey);
	level_add(lvl, &okey, OVERFLOW_METHOD, strlen(OVERFLOW_METHOD),
			  OVERFLOW_PATH, strlen(OVERFLOW_PATH), NULL, 0, d, slots, lat, lat_n);
}

/*
 * Add counts for a key to a level.  A different string with the same hash
 * (a 64-bit collision) is routed to the overflow key rather than merged.
 */
static void
level_add(PendingLevel *lvl, const CounterKey *key,
		  const char *method, int method_len,
		  const char *path, int path_len,
		  const char *user, int user_len,
		  const CounterDelta *d, const LocalSlot *slots,
		  const LatPair *lat, int lat_n)
{
	PendingEntry *e;
	bool		found;
	uint32		hashcode = get_hash_value(lvl->tab, key);

	/*
	 * Memory bound: a level never holds more distinct keys than the shared
	 * table has entries, since at commit the surplus would overflow anyway.
	 * New keys past that count as overflow right away (totals unchanged).
	 */
	if (!(key->flags & KEY_OVERFLOW) &&
		hash_get_num_entries(lvl->tab) >= apicount_shared->capacity)
	{
		e = hash_search_with_hash_value(lvl->tab, key, hashcode, HASH_FIND,
										NULL);
		if (e == NULL)
		{
			add_overflow_local(lvl, key->minute, d, slots, lat, lat_n);
			return;
		}
		found = true;
	}
	else
		e = hash_search_with_hash_value(lvl->tab, key, hashcode, HASH_ENTER,
										&found);
	if (!found)
	{
		memset(((char *) e) + sizeof(CounterKey), 0,
			   pending_entry_size() - sizeof(CounterKey));
		e->method = copy_string(lvl->strcxt, method, method_len);
		e->method_len = method_len;
		e->path = copy_string(lvl->strcxt, path, path_len);
		e->path_len = path_len;
		e->user = copy_string(lvl->strcxt, user, user_len);
		e->user_len = user_len;
	}
	else if (!same_strings(e, method, method_len, path, path_len,
						   user, user_len))
	{
		add_overflow_local(lvl, key->minute, d, slots, lat, lat_n);
		return;
	}
	add_counts(e, lvl->strcxt, d, slots, lat, lat_n);
}

void
pending_add(const PendingHit *hit)
{
	int			nest = GetCurrentTransactionNestLevel();
	CounterDelta d;
	LocalSlot	slots[MAX_SLOTS];
	LatPair		lat;
	bool		ok = false;
	bool		client_error = false;
	bool		server_error = false;

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
	memset(slots, 0, sizeof(LocalSlot) * apicount_shared->nslots);
	slots[hit->slot].calls = 1;
	slots[hit->slot].ok = ok;
	slots[hit->slot].errors = client_error || server_error;

	level_add(top_level, &hit->key, hit->method, hit->method_len,
			  hit->path, hit->path_len, hit->user, hit->user_len,
			  &d, slots, &lat, hit->has_latency ? 1 : 0);
}

static bool
pending_is_empty(void)
{
	PendingLevel *lvl;

	for (lvl = top_level; lvl != NULL; lvl = lvl->next)
		if (hash_get_num_entries(lvl->tab) > 0)
			return false;
	return true;
}

static void
merge_level_into_parent(void)
{
	PendingLevel *child = top_level;
	PendingLevel *parent = child->next;
	HASH_SEQ_STATUS seq;
	PendingEntry *e;

	hash_seq_init(&seq, child->tab);
	while ((e = hash_seq_search(&seq)) != NULL)
		level_add(parent, &e->key, e->method, e->method_len,
				  e->path, e->path_len, e->user, e->user_len,
				  &e->d, e->slots, e->lat, e->lat_n);
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
		HASH_SEQ_STATUS seq;
		PendingEntry *e;

		hash_seq_init(&seq, lvl->tab);
		while ((e = hash_seq_search(&seq)) != NULL)
		{
			CountedUnder under = counters_add(&e->key, e->method, e->method_len,
											  e->path, e->path_len,
											  e->user, e->user_len,
											  &e->d, e->slots);

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

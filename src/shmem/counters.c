/*-------------------------------------------------------------------------
 * counters.c
 *		The shared-memory counter table: layout, lookup, add, removal.
 *
 * Owns the ApicountShared header and the two tiers of counter entries
 * (counters.h).  Hits reach this file only at commit (pending.c); nothing
 * here flushes, scans or evicts on that path: an existing key is updated
 * under a shared partition lock with atomic adds, and only a new key takes
 * the partition lock exclusively.  Each commit of a key costs at most a
 * constant number of lookups: its API entry (or the method's "(other)"
 * path when the API tier is full), its caller entry, and when the caller
 * tier is full, the API entry again for "(other callers)".  If even the
 * "(other)" reserve has no room, hits go to the spill counters in the
 * header, which the worker writes under the current minute.
 *
 * Locking rules: see counters.h.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <sys/socket.h>

#include "common/hashfn.h"
#include "miscadmin.h"
#include "storage/ipc.h"
#include "storage/shmem.h"
#include "utils/inet.h"
#include "utils/timestamp.h"

#include "compat.h"
#include "counters.h"
#include "entry_table.h"
#include "guc.h"
#include "heavy.h"
#include "latency_store.h"
#include "strtab.h"

ApicountShared *apicount_shared = NULL;

/* hashes of ANY_METHOD and OTHER_PATH, set at shared memory init */
uint64		apicount_any_method_h;
uint64		apicount_other_path_h;
uint64		apicount_other_callers_h;

/* from ApicountShared.hash_seed, set at shared memory init */
uint64		apicount_hash_seed = 0;

uint64
apicount_hash_string(const char *s, size_t len)
{
	uint64		h = hash_bytes_extended((const unsigned char *) s, (int) len,
										apicount_hash_seed);

	return h == 0 ? 1 : h;
}

static Size
entry_tail_offset(void)
{
	int			nslots = 60 / apicount_slot_seconds;

	return TYPEALIGN(8, offsetof(CounterEntry, cnt) +
					 sizeof(pg_atomic_uint32) * (3 * nslots + 3));
}

static Size
counters_entry_size(void)
{
	return entry_tail_offset() + sizeof(CounterTail);
}

static int64
total_capacity(void)
{
	return (int64) apicount_max_entries + apicount_max_apis + OVERFLOW_RESERVE +
		apicount_max_audited_entries;
}

/*
 * Distinct strings held at once.  Keys share paths and methods heavily,
 * so half the entries of the caller and API tiers is ample; when it runs
 * out, a new caller is folded and a new API goes to "(other)", as when
 * their tier is full.  The audited tier has a reserve of its own, a user
 * id per entry, so a flood of distinct user ids cannot fold an audited
 * caller by taking every string.
 */
static int64
string_capacity(void)
{
	return ((int64) apicount_max_entries + apicount_max_apis +
			OVERFLOW_RESERVE) / 2 + 64;
}

/* strings kept for the entries of the audited tier: a user id each */
static int64
string_reserve(void)
{
	return apicount_max_audited_entries;
}

int
counters_lwlock_count(void)
{
	return COUNTER_PARTITIONS + STRTAB_PARTITIONS + LAT_PARTITIONS +
		heavy_lwlock_count();
}

Size
counters_shmem_size(void)
{
	Size		size = MAXALIGN(sizeof(ApicountShared));

	size = add_size(size, etab_shmem_size(total_capacity(),
										  counters_entry_size()));
	size = add_size(size, strtab_shmem_size(string_capacity() + string_reserve()));
	size = add_size(size, heavy_shmem_size());
	size = add_size(size, latstore_shmem_size((int64) apicount_max_entries +
											  apicount_max_apis));
	return size;
}

bool
counters_ready(void)
{
	return apicount_shared != NULL && etab_ready();
}

void
counters_shmem_init(void)
{
	bool		found;

	apicount_shared = ShmemInitStruct("apicount", sizeof(ApicountShared),
									  &found);
	if (!found)
	{
		memset(apicount_shared, 0, sizeof(ApicountShared));
		if (!pg_strong_random(&apicount_shared->hash_seed,
							  sizeof(apicount_shared->hash_seed)))
			apicount_shared->hash_seed = (uint64) GetCurrentTimestamp() ^
				((uint64) MyProcPid << 40);
		apicount_shared->locks = GetNamedLWLockTranche("apicount");
		apicount_shared->slot_seconds = apicount_slot_seconds;
		apicount_shared->nslots = 60 / apicount_slot_seconds;
		Assert(apicount_shared->nslots <= APICOUNT_MAX_SLOTS);
		apicount_shared->tail_offset = entry_tail_offset();
		apicount_shared->capacity = apicount_max_entries;
		apicount_shared->api_capacity = apicount_max_apis;
		apicount_shared->audited_capacity = apicount_max_audited_entries;
		pg_atomic_init_u32(&apicount_shared->audited_entries, 0);
		pg_atomic_init_u64(&apicount_shared->audited_folded, 0);
		pg_atomic_init_u64(&apicount_shared->audited_alerted, 0);
		pg_atomic_init_u64(&apicount_shared->audited_gen, 0);
		pg_atomic_init_u32(&apicount_shared->normal_entries, 0);
		pg_atomic_init_u32(&apicount_shared->api_entries, 0);
		pg_atomic_init_u64(&apicount_shared->folded_calls, 0);
		pg_atomic_init_u64(&apicount_shared->folded_unsummarized, 0);
		pg_atomic_init_u32(&apicount_shared->overflow_entries, 0);
		pg_atomic_init_u64(&apicount_shared->hits, 0);
		pg_atomic_init_u64(&apicount_shared->overflow_hits, 0);
		pg_atomic_init_u64(&apicount_shared->truncated, 0);
		pg_atomic_init_u64(&apicount_shared->flushes, 0);
		pg_atomic_init_u64(&apicount_shared->flush_failures, 0);
		pg_atomic_init_u64(&apicount_shared->caller_rows_inserted, 0);
		pg_atomic_init_u64(&apicount_shared->caller_rows_updated, 0);
		pg_atomic_init_u64(&apicount_shared->caller_rows_upserted, 0);
		pg_atomic_init_u64(&apicount_shared->last_flush_at, 0);
		pg_atomic_init_u64(&apicount_shared->last_flush_us, 0);
		pg_atomic_init_u64(&apicount_shared->spill_calls, 0);
		pg_atomic_init_u64(&apicount_shared->spill_ok, 0);
		pg_atomic_init_u64(&apicount_shared->spill_client_errors, 0);
		pg_atomic_init_u64(&apicount_shared->spill_server_errors, 0);
		pg_atomic_init_u64(&apicount_shared->spill_lat_count, 0);
		pg_atomic_init_u64(&apicount_shared->spill_lat_sum_ns, 0);
		pg_atomic_init_u64(&apicount_shared->spill_lat_max_ns, 0);
		SpinLockInit(&apicount_shared->mutex);
		ConditionVariableInit(&apicount_shared->flush_cv);
		apicount_shared->shmem_bytes = counters_shmem_size();
	}

	etab_shmem_init(total_capacity(), counters_entry_size());

	strtab_shmem_init(string_capacity(), string_reserve(),
					  apicount_shared->locks + COUNTER_PARTITIONS);
	latstore_shmem_init((int64) apicount_max_entries + apicount_max_apis,
						apicount_shared->locks + COUNTER_PARTITIONS +
						STRTAB_PARTITIONS);

	heavy_shmem_init(apicount_shared->locks + COUNTER_PARTITIONS +
					 STRTAB_PARTITIONS + LAT_PARTITIONS);

	apicount_hash_seed = apicount_shared->hash_seed;
	apicount_any_method_h = apicount_hash_string(ANY_METHOD,
													  strlen(ANY_METHOD));
	apicount_other_path_h = apicount_hash_string(OTHER_PATH,
													strlen(OTHER_PATH));
	apicount_other_callers_h = apicount_hash_string(OTHER_CALLERS,
													strlen(OTHER_CALLERS));
	if (!found)
	{
		/* the overflow strings stay for the life of the server */
		strtab_ref(apicount_any_method_h, ANY_METHOD,
				   strlen(ANY_METHOD));
		strtab_ref(apicount_other_path_h, OTHER_PATH,
				   strlen(OTHER_PATH));
		strtab_ref(apicount_other_callers_h, OTHER_CALLERS,
				   strlen(OTHER_CALLERS));
	}
}

Datum
counters_key_inet(const CounterKey *key)
{
	inet	   *ip = palloc0(sizeof(inet));

	ip_family(ip) = key->ip_family;
	ip_bits(ip) = key->ip_bits;
	memcpy(ip_addr(ip), key->ip_addr, ip_addrsize(ip));
	SET_INET_VARSIZE(ip);
	return InetPGetDatum(ip);
}

void
counters_other_path_key(int32 minute, uint64 method_h, CounterKey *key)
{
	memset(key, 0, sizeof(CounterKey));
	key->minute = minute;
	key->method_h = method_h;
	key->path_h = apicount_other_path_h;
	key->flags = KEY_API | KEY_OVERFLOW;
}

void
counters_catchall_key(int32 minute, CounterKey *key)
{
	counters_other_path_key(minute, apicount_any_method_h, key);
}

void
counters_api_key(const CounterKey *key, CounterKey *api)
{
	memset(api, 0, sizeof(CounterKey));
	api->minute = key->minute;
	api->method_h = key->method_h;
	api->path_h = key->path_h;
	api->flags = KEY_API | (key->path_h == apicount_other_path_h ?
							KEY_OVERFLOW : 0);
}

/* the minute holding ts (floor division, also before 2000) */
static inline int64
minute_floor(TimestampTz ts)
{
	return ts / USECS_PER_MINUTE - (ts < 0 && ts % USECS_PER_MINUTE != 0);
}

int32
apicount_minute_of(TimestampTz ts)
{
	return (int32) minute_floor(ts);
}

static int32
clamp_minute(int64 m)
{
	return (int32) Max(Min(m, (int64) PG_INT32_MAX), (int64) PG_INT32_MIN);
}

/* -infinity and infinity are the first and last minutes */
static bool
infinite_minute(TimestampTz ts, int32 *minute)
{
	if (TIMESTAMP_IS_NOBEGIN(ts))
		*minute = PG_INT32_MIN;
	else if (TIMESTAMP_IS_NOEND(ts))
		*minute = PG_INT32_MAX;
	else
		return false;
	return true;
}

int32
apicount_minute_at_or_after(TimestampTz ts)
{
	int64		m;
	int32		edge;

	if (infinite_minute(ts, &edge))
		return edge;
	m = minute_floor(ts);
	if (m * USECS_PER_MINUTE < ts)
		m++;
	return clamp_minute(m);
}

int32
apicount_minute_before(TimestampTz ts)
{
	int64		m;
	int32		edge;

	if (infinite_minute(ts, &edge))
		return edge;
	m = minute_floor(ts);
	if (m * USECS_PER_MINUTE == ts)
		m--;
	return clamp_minute(m);
}

int
apicount_slot_in_minute(TimestampTz ts, int32 minute)
{
	int64		sec = (ts - (int64) minute * USECS_PER_MINUTE) / USECS_PER_SEC;

	return (int) (sec / apicount_slot_seconds);
}

static inline LWLock *
partition_lock(uint32 hashcode)
{
	return &apicount_shared->locks[hashcode % COUNTER_PARTITIONS].lock;
}

static void
atomic_max_u64(pg_atomic_uint64 *ptr, uint64 val)
{
	uint64		cur = pg_atomic_read_u64(ptr);

	while (val > cur)
	{
		if (pg_atomic_compare_exchange_u64(ptr, &cur, val))
			break;
	}
}

/*
 * Set while counters_add adds a folded caller to its API entry: the entry
 * is then marked (CounterTail.late: its minute had folded callers).
 */
static bool adding_fold = false;

/*
 * Add a delta (and "(other callers)" counts o, if any) to an entry.
 * Returns false, adding nothing, if a 32-bit field could wrap (about 4
 * billion hits of one key in one flush interval); the caller then counts
 * the delta elsewhere.
 */
static bool
apply_delta(CounterEntry *e, const CounterDelta *d, const LocalSlot *slots,
			const CounterOther *o)
{
	CounterTail *t = entry_tail(e);
	uint64		n = d->calls + (o ? o->calls : 0);
	int			i;

	if ((uint64) pg_atomic_read_u32(entry_ok(e)) + n >= PG_UINT32_MAX ||
		(uint64) pg_atomic_read_u32(&e->lat_count) + n >= PG_UINT32_MAX ||
		(uint64) pg_atomic_read_u32(entry_client_errors(e)) + n >= PG_UINT32_MAX ||
		(uint64) pg_atomic_read_u32(entry_server_errors(e)) + n >= PG_UINT32_MAX ||
		(uint64) pg_atomic_read_u32(&t->other_ok) + n >= PG_UINT32_MAX ||
		(uint64) pg_atomic_read_u32(&t->other_client_errors) + n >= PG_UINT32_MAX ||
		(uint64) pg_atomic_read_u32(&t->other_server_errors) + n >= PG_UINT32_MAX)
		return false;

	if (d->calls)
		pg_atomic_fetch_add_u64(&t->calls, d->calls);
	if (d->ok)
		pg_atomic_fetch_add_u32(entry_ok(e), (uint32) d->ok);
	if (d->client_errors)
		pg_atomic_fetch_add_u32(entry_client_errors(e), (uint32) d->client_errors);
	if (d->server_errors)
		pg_atomic_fetch_add_u32(entry_server_errors(e), (uint32) d->server_errors);
	if (d->lat_count)
	{
		pg_atomic_fetch_add_u32(&e->lat_count, (uint32) d->lat_count);
		pg_atomic_fetch_add_u64(&e->lat_sum_ns, d->lat_sum_ns);
		atomic_max_u64(&t->lat_max_ns, d->lat_max_ns);
	}
	if (d->calls)
	{
		for (i = 0; i < apicount_shared->nslots; i++)
		{
			if (slots[i].calls == 0)
				continue;
			pg_atomic_fetch_add_u32(entry_slot_calls(e, i), slots[i].calls);
			if (slots[i].ok)
				pg_atomic_fetch_add_u32(entry_slot_ok(e, i), slots[i].ok);
			if (slots[i].errors)
				pg_atomic_fetch_add_u32(entry_slot_errors(e, i), slots[i].errors);
		}
	}
	if (o != NULL && o->calls)
	{
		if (adding_fold && t->late == 0)
			t->late = 1;		/* the same store from every backend */
		pg_atomic_fetch_add_u64(&t->other_calls, o->calls);
		if (o->ok)
			pg_atomic_fetch_add_u32(&t->other_ok, (uint32) o->ok);
		if (o->client_errors)
			pg_atomic_fetch_add_u32(&t->other_client_errors,
									(uint32) o->client_errors);
		if (o->server_errors)
			pg_atomic_fetch_add_u32(&t->other_server_errors,
									(uint32) o->server_errors);
	}
	return true;
}

static void
init_entry(CounterEntry *e)
{
	CounterTail *t = entry_tail(e);
	int			i;

	pg_atomic_init_u64(&e->lat_sum_ns, 0);
	pg_atomic_init_u32(&e->lat_count, 0);
	for (i = 0; i < 3 * apicount_shared->nslots + 3; i++)
		pg_atomic_init_u32(&e->cnt[i], 0);
	pg_atomic_init_u64(&t->calls, 0);
	pg_atomic_init_u64(&t->lat_max_ns, 0);
	pg_atomic_init_u64(&t->other_calls, 0);
	pg_atomic_init_u32(&t->other_ok, 0);
	pg_atomic_init_u32(&t->other_client_errors, 0);
	pg_atomic_init_u32(&t->other_server_errors, 0);
	t->tier = TIER_CALLER;
	t->late = 0;
}

/* set when the current counters_add sent its delta to the spill counters */
static bool delta_spilled = false;

static void
add_spill(const CounterDelta *d)
{
	delta_spilled = true;
	pg_atomic_fetch_add_u64(&apicount_shared->spill_calls, d->calls);
	pg_atomic_fetch_add_u64(&apicount_shared->spill_ok, d->ok);
	pg_atomic_fetch_add_u64(&apicount_shared->spill_client_errors,
							d->client_errors);
	pg_atomic_fetch_add_u64(&apicount_shared->spill_server_errors,
							d->server_errors);
	pg_atomic_fetch_add_u64(&apicount_shared->spill_lat_count, d->lat_count);
	pg_atomic_fetch_add_u64(&apicount_shared->spill_lat_sum_ns, d->lat_sum_ns);
	atomic_max_u64(&apicount_shared->spill_lat_max_ns, d->lat_max_ns);
}

/*
 * Update an existing entry under the shared partition lock.  A delta that
 * would wrap a 32-bit field of an API entry goes to the spill counters,
 * exactly (the spill's "(other callers)" row counts all its hits); on a
 * caller entry it is refused as if there were no room, and so folded.
 */
static bool
add_existing(const CounterKey *key, uint32 hashcode, const CounterDelta *d,
			 const LocalSlot *slots, const CounterOther *o)
{
	LWLock	   *lock = partition_lock(hashcode);
	CounterEntry *e;

	LWLockAcquire(lock, LW_SHARED);
	e = etab_find(key, hashcode);
	if (e != NULL && !apply_delta(e, d, slots, o))
	{
		if (key->flags & KEY_API)
			add_spill(d);
		else
			e = NULL;
	}
	LWLockRelease(lock);
	return e != NULL;
}

static bool
reserve_slot(pg_atomic_uint32 *counter, int64 limit)
{
	if ((int64) pg_atomic_fetch_add_u32(counter, 1) >= limit)
	{
		pg_atomic_fetch_sub_u32(counter, 1);
		return false;
	}
	return true;
}

/* the count of entries in a tier and the tier's capacity */
static pg_atomic_uint32 *
tier_counter(EntryTier tier, int64 *limit)
{
	switch (tier)
	{
		case TIER_API:
			*limit = apicount_shared->api_capacity;
			return &apicount_shared->api_entries;
		case TIER_OTHER:
			*limit = OVERFLOW_RESERVE;
			return &apicount_shared->overflow_entries;
		case TIER_AUDITED:
			*limit = apicount_shared->audited_capacity;
			return &apicount_shared->audited_entries;
		case TIER_CALLER:
			break;
	}
	*limit = apicount_shared->capacity;
	return &apicount_shared->normal_entries;
}

/* the tier a key's entry is made in first */
static inline EntryTier
tier_of(const CounterKey *key)
{
	if (key->flags & KEY_OVERFLOW)
		return TIER_OTHER;
	return (key->flags & KEY_API) ? TIER_API : TIER_CALLER;
}

/*
 * Create the entry (the caller holds string references for it) and add.
 * Returns false if there is no room; the caller then drops its references.
 * *created tells whether the new entry kept the references.
 */
static bool
create_and_add(const CounterKey *key, uint32 hashcode, const CounterDelta *d,
			   const LocalSlot *slots, const CounterOther *o, EntryTier tier,
			   bool *created)
{
	LWLock	   *lock = partition_lock(hashcode);
	int64		limit;
	pg_atomic_uint32 *count = tier_counter(tier, &limit);
	CounterEntry *e;
	bool		found;

	*created = false;
	if (!reserve_slot(count, limit))
	{
		/* full, but the key may have appeared meanwhile */
		return add_existing(key, hashcode, d, slots, o);
	}

	LWLockAcquire(lock, LW_EXCLUSIVE);
	e = etab_enter(key, hashcode, &found);
	if (e != NULL)
	{
		if (!found)
		{
			init_entry(e);
			*created = true;
			entry_tail(e)->tier = (uint16) tier;
			if (!(key->flags & KEY_API) && heavy_maybe_folded(key))
				entry_tail(e)->late = 1;
		}
		if (!apply_delta(e, d, slots, o))
		{
			/* as in add_existing (a fresh entry cannot wrap) */
			if (key->flags & KEY_API)
				add_spill(d);
			else if (!*created)
				e = NULL;
		}
	}
	LWLockRelease(lock);

	if (!*created)
		pg_atomic_fetch_sub_u32(count, 1);
	return e != NULL;
}

/*
 * Add to key's entry, creating it in tier if the tier has room.  False
 * when there was no entry and no room; nothing was added then.
 */
static bool
add_or_create_in(const CounterKey *key, uint32 hashcode,
				 const char *method, int method_len,
				 const char *path, int path_len,
				 const char *user, int user_len,
				 const CounterDelta *d, const LocalSlot *slots,
				 const CounterOther *o, EntryTier tier)
{
	bool		created = false;
	bool		added = false;
	int64		limit;

	if (add_existing(key, hashcode, d, slots, o))
		return true;

	/* a full tier refuses new keys without touching strings */
	if ((int64) pg_atomic_read_u32(tier_counter(tier, &limit)) >= limit)
		return false;

	/* new key: take string references first, never under a partition lock */
	strtab_use_reserve = (tier == TIER_AUDITED);
	if (strtab_ref(key->method_h, method, method_len))
	{
		if (strtab_ref(key->path_h, path, path_len))
		{
			if (strtab_ref(key->user_h, user, user_len))
			{
				added = create_and_add(key, hashcode, d, slots, o, tier,
									   &created);
				if (!created)
					strtab_unref(key->user_h);
			}
			if (!created)
				strtab_unref(key->path_h);
		}
		if (!created)
			strtab_unref(key->method_h);
	}
	strtab_use_reserve = false;
	return added;
}

/* add_or_create_in the key's own tier */
static inline bool
add_or_create(const CounterKey *key, uint32 hashcode,
			  const char *method, int method_len,
			  const char *path, int path_len,
			  const char *user, int user_len,
			  const CounterDelta *d, const LocalSlot *slots,
			  const CounterOther *o)
{
	return add_or_create_in(key, hashcode, method, method_len, path, path_len,
							user, user_len, d, slots, o, tier_of(key));
}

/* no per-slot counts: the slots of a delta that adds no calls */
static const LocalSlot no_slots[APICOUNT_MAX_SLOTS];

/*
 * The API-level counts of a delta: its API's entry, else its method's
 * "(other)" path, else the catch-all ("*", "(other)"), else the spill.
 * *api is left as the key the counts landed on.
 */
static CountedUnder
add_api(CounterKey *api, const char *method, int method_len,
		const char *path, int path_len, const CounterDelta *delta,
		const LocalSlot *slots, const CounterOther *o, bool audited)
{
	bool		was_other = (api->flags & KEY_OVERFLOW) != 0;

	if (add_or_create(api, etab_hash(api), method, method_len, path, path_len,
					  NULL, 0, delta, slots, o))
		return was_other ? COUNTED_OVERFLOW : COUNTED_KEY;
	if (audited && !was_other &&
		add_or_create_in(api, etab_hash(api), method, method_len, path,
						 path_len, NULL, 0, delta, slots, o, TIER_AUDITED))
		return COUNTED_KEY;

	if (!was_other)
	{
		pg_atomic_fetch_add_u64(&apicount_shared->overflow_hits, delta->calls);
		/* the heavy ones among the folded APIs keep their names */
		(void) heavy_add_api(api, method, method_len, path, path_len,
							 delta->calls, slots);
	}
	counters_other_path_key(api->minute, api->method_h, api);
	if (add_or_create(api, etab_hash(api), method, method_len,
					  OTHER_PATH, strlen(OTHER_PATH), NULL, 0, delta, slots, o))
		return COUNTED_OVERFLOW;
	counters_catchall_key(api->minute, api);
	if (add_or_create(api, etab_hash(api), ANY_METHOD, strlen(ANY_METHOD),
					  OTHER_PATH, strlen(OTHER_PATH), NULL, 0, delta, slots, o))
		return COUNTED_OVERFLOW;
	add_spill(delta);
	return COUNTED_SPILL;
}

/* the caller tier is full: a new caller would be folded */
static inline bool
caller_tier_full(void)
{
	return (int64) pg_atomic_read_u32(&apicount_shared->normal_entries) >=
		apicount_shared->capacity;
}

/* the counts of a fold: in the summaries of heavy callers (heavy.h) */
static void
summarize_fold(const CounterKey *ck, const char *user, int user_len,
			   const CounterDelta *delta, const LocalSlot *slots)
{
	pg_atomic_fetch_add_u64(&apicount_shared->folded_calls, delta->calls);
	if (!heavy_add(ck, user, user_len, delta->calls,
				   delta->client_errors + delta->server_errors, slots))
		pg_atomic_fetch_add_u64(&apicount_shared->folded_unsummarized,
								delta->calls);
}

/*
 * A caller about to be folded: its bits go into its minute's Bloom filter
 * first, then its entry is looked for once more.  A backend that made the
 * entry before this lookup is found here, and the fold does not happen
 * (the caller stays exact); one that makes it after reads the bits (its
 * maker reads them under the partition lock this lookup takes, after they
 * were set) and marks the entry late.  So a caller never has both an entry
 * that says "never folded" and folded calls in the same minute, unless the
 * worker retires the minute's filter in between (heavy_retire).
 */
static bool
entry_exists(const CounterKey *key, uint32 hashcode)
{
	LWLock	   *lock = partition_lock(hashcode);
	bool		exists;

	LWLockAcquire(lock, LW_SHARED);
	exists = etab_find(key, hashcode) != NULL;
	LWLockRelease(lock);
	return exists;
}

static bool
found_after_noting_fold(const CounterKey *ck, uint32 hashcode)
{
	heavy_note_fold(ck);
	return entry_exists(ck, hashcode);
}

/*
 * The common fold, in one step: a caller with no entry while the caller
 * tier is full, whose API entry exists.  Its counts and its "(other
 * callers)" counts go to the API entry under one lock, instead of the API
 * counts first and the "(other callers)" counts after the caller was
 * refused.  False, with nothing counted, in any other case: the general
 * path (counters_add_internal) then does it all.
 */
static bool
fold_new_caller(const CounterKey *key, uint32 hashcode, CounterKey *api,
				const char *user, int user_len, const CounterDelta *delta,
				const LocalSlot *slots, const CounterOther *all,
				CountedUnder *under)
{
	CounterKey	ck;
	bool		exists;

	if (!caller_tier_full() || (api->flags & KEY_OVERFLOW))
		return false;
	ck = *key;
	ck.flags = KEY_TRACKED;
	if (memcmp(&ck, key, sizeof(ck)) != 0)
		hashcode = etab_hash(&ck);
	if (entry_exists(&ck, hashcode) || found_after_noting_fold(&ck, hashcode))
		return false;

	adding_fold = true;
	exists = add_existing(api, etab_hash(api), delta, slots, all);
	adding_fold = false;
	if (!exists)
		return false;
	*under = COUNTED_KEY;
	if (!delta_spilled)
		summarize_fold(&ck, user, user_len, delta, slots);
	return true;
}

static CountedUnder
counters_add_internal(const CounterKey *key, uint32 hashcode,
					  const char *method, int method_len,
					  const char *path, int path_len,
					  const char *user, int user_len,
					  const CounterDelta *delta,
					  const LocalSlot *slots, bool audited,
					  CounterKey *api)
{
	CounterOther all = {delta->calls, delta->ok, delta->client_errors,
	delta->server_errors};
	bool		caller = (key->flags & KEY_TRACKED) != 0;
	CountedUnder under;
	CounterKey	ck;
	CounterDelta cd;
	CounterDelta none;

	pg_atomic_fetch_add_u64(&apicount_shared->hits, delta->calls);
	if (delta->truncated)
		pg_atomic_fetch_add_u64(&apicount_shared->truncated, delta->truncated);
	if (key->flags & KEY_FOLDED)
	{
		/* folded by the backend, past max_entries keys in one transaction */
		pg_atomic_fetch_add_u64(&apicount_shared->folded_calls, delta->calls);
		pg_atomic_fetch_add_u64(&apicount_shared->folded_unsummarized,
								delta->calls);
		if (audited)
			pg_atomic_fetch_add_u64(&apicount_shared->audited_folded,
									delta->calls);
	}

	/* hits without a caller key are "(other callers)" of their API */
	counters_api_key(key, api);
	if (api->flags & KEY_OVERFLOW)
		pg_atomic_fetch_add_u64(&apicount_shared->overflow_hits, delta->calls);
	if (caller && !audited && fold_new_caller(key, hashcode, api, user,
											  user_len, delta, slots, &all,
											  &under))
		return under;
	under = add_api(api, method, method_len, path, path_len, delta, slots,
					caller ? NULL : &all, audited);
	if (!caller || under == COUNTED_SPILL)
		return under;

	/* the caller, under the API its counts landed on; no latency */
	ck = *key;
	ck.method_h = api->method_h;
	ck.path_h = api->path_h;
	ck.flags = KEY_TRACKED;
	if (memcmp(&ck, key, sizeof(ck)) != 0)
		hashcode = etab_hash(&ck);
	if (ck.method_h != key->method_h)
	{
		method = ANY_METHOD;
		method_len = strlen(ANY_METHOD);
	}
	if (ck.path_h != key->path_h)
	{
		path = OTHER_PATH;
		path_len = strlen(OTHER_PATH);
	}
	cd = *delta;
	cd.lat_count = cd.lat_sum_ns = cd.lat_max_ns = 0;
	if (add_or_create(&ck, hashcode, method, method_len, path, path_len,
					  user, user_len, &cd, slots, NULL))
		return under;
	if (audited &&
		add_or_create_in(&ck, hashcode, method, method_len, path, path_len,
						 user, user_len, &cd, slots, NULL, TIER_AUDITED))
		return under;
	/* made meanwhile by another backend: counted there, not folded */
	if (found_after_noting_fold(&ck, hashcode) &&
		add_existing(&ck, hashcode, &cd, slots, NULL))
		return under;
	if (audited)
	{
		/* even the audited tier is full: the worker fires an alert */
		pg_atomic_fetch_add_u64(&apicount_shared->audited_folded, delta->calls);
	}

	/*
	 * No room for the caller: folded into its API's "(other callers)", and
	 * counted in the summaries of heavy callers (heavy.h).
	 */
	summarize_fold(&ck, user, user_len, delta, slots);
	memset(&none, 0, sizeof(none));
	adding_fold = true;
	if (!add_or_create(api, etab_hash(api), method, method_len, path, path_len,
					   NULL, 0, &none, no_slots, &all))
	{
		/*
		 * The API entry was flushed and freed since, and its tier filled
		 * meanwhile: the catch-all keeps the caller total whole.
		 */
		counters_catchall_key(api->minute, &ck);
		(void) add_or_create(&ck, etab_hash(&ck), ANY_METHOD,
							 strlen(ANY_METHOD), OTHER_PATH,
							 strlen(OTHER_PATH), NULL, 0, &none, no_slots,
							 &all);
	}
	adding_fold = false;
	return under;
}

CountedUnder
counters_add(const CounterKey *key, uint32 hashcode,
			 const char *method, int method_len,
			 const char *path, int path_len,
			 const char *user, int user_len,
			 const CounterDelta *delta,
			 const LocalSlot *slots, bool audited,
			 uint64 *api_method_h, uint64 *api_path_h)
{
	CountedUnder r;
	CounterKey	api;

	delta_spilled = false;
	Assert(hashcode == etab_hash(key));
	r = counters_add_internal(key, hashcode, method, method_len, path, path_len,
							  user, user_len, delta, slots, audited, &api);
	*api_method_h = api.method_h;
	*api_path_h = api.path_h;
	return delta_spilled ? COUNTED_SPILL : r;
}

void
counters_lock_all(LWLockMode mode)
{
	int			i;

	for (i = 0; i < COUNTER_PARTITIONS; i++)
		LWLockAcquire(&apicount_shared->locks[i].lock, mode);
}

void
counters_unlock_all(void)
{
	int			i;

	for (i = COUNTER_PARTITIONS - 1; i >= 0; i--)
		LWLockRelease(&apicount_shared->locks[i].lock);
}

void
counters_read_delta(CounterEntry *e, CounterDelta *d)
{
	d->truncated = 0;
	d->calls = pg_atomic_read_u64(&entry_tail(e)->calls);
	d->ok = pg_atomic_read_u32(entry_ok(e));
	d->client_errors = pg_atomic_read_u32(entry_client_errors(e));
	d->server_errors = pg_atomic_read_u32(entry_server_errors(e));
	d->lat_count = pg_atomic_read_u32(&e->lat_count);
	d->lat_sum_ns = pg_atomic_read_u64(&e->lat_sum_ns);
	d->lat_max_ns = pg_atomic_read_u64(&entry_tail(e)->lat_max_ns);
}

void
counters_read_other(CounterEntry *e, CounterOther *o)
{
	CounterTail *t = entry_tail(e);

	o->calls = pg_atomic_read_u64(&t->other_calls);
	o->ok = pg_atomic_read_u32(&t->other_ok);
	o->client_errors = pg_atomic_read_u32(&t->other_client_errors);
	o->server_errors = pg_atomic_read_u32(&t->other_server_errors);
}

void
counters_subtract(CounterEntry *e, const CounterDelta *d,
				  const CounterOther *o)
{
	uint64		expected = d->lat_max_ns;
	CounterTail *t = entry_tail(e);

	if (o != NULL)
	{
		pg_atomic_fetch_sub_u64(&t->other_calls, o->calls);
		pg_atomic_fetch_sub_u32(&t->other_ok, (uint32) o->ok);
		pg_atomic_fetch_sub_u32(&t->other_client_errors,
								(uint32) o->client_errors);
		pg_atomic_fetch_sub_u32(&t->other_server_errors,
								(uint32) o->server_errors);
	}

	pg_atomic_fetch_sub_u64(&entry_tail(e)->calls, d->calls);
	pg_atomic_fetch_sub_u32(entry_ok(e), (uint32) d->ok);
	pg_atomic_fetch_sub_u32(entry_client_errors(e), (uint32) d->client_errors);
	pg_atomic_fetch_sub_u32(entry_server_errors(e), (uint32) d->server_errors);
	pg_atomic_fetch_sub_u32(&e->lat_count, (uint32) d->lat_count);
	pg_atomic_fetch_sub_u64(&e->lat_sum_ns, d->lat_sum_ns);

	/*
	 * The flushed maximum is in the rollup now; clear it unless a larger
	 * one arrived meanwhile.  A smaller one that arrived meanwhile cannot
	 * change the minute's maximum.
	 */
	pg_atomic_compare_exchange_u64(&entry_tail(e)->lat_max_ns, &expected, 0);
}

bool
counters_remove(CounterEntry *e, bool only_if_idle)
{
	CounterKey	key = e->key;
	uint32		hashcode = etab_hash(&key);
	LWLock	   *lock = partition_lock(hashcode);
	bool		removed = false;
	uint16		tier = entry_tail(e)->tier;

	LWLockAcquire(lock, LW_EXCLUSIVE);
	if (!only_if_idle ||
		(pg_atomic_read_u64(&entry_tail(e)->calls) == 0 &&
		 pg_atomic_read_u32(&e->lat_count) == 0 &&
		 pg_atomic_read_u64(&entry_tail(e)->other_calls) == 0))
	{
		etab_remove(e, hashcode);
		removed = true;
	}
	LWLockRelease(lock);

	if (removed)
	{
		int64		limit;

		pg_atomic_fetch_sub_u32(tier_counter((EntryTier) tier, &limit), 1);
		strtab_unref(key.method_h);
		strtab_unref(key.path_h);
		strtab_unref(key.user_h);
	}
	return removed;
}

void
counters_take_spill(CounterDelta *d)
{
	ApicountShared *s = apicount_shared;

	d->truncated = 0;
	d->calls = pg_atomic_exchange_u64(&s->spill_calls, 0);
	d->ok = pg_atomic_exchange_u64(&s->spill_ok, 0);
	d->client_errors = pg_atomic_exchange_u64(&s->spill_client_errors, 0);
	d->server_errors = pg_atomic_exchange_u64(&s->spill_server_errors, 0);
	d->lat_count = pg_atomic_exchange_u64(&s->spill_lat_count, 0);
	d->lat_sum_ns = pg_atomic_exchange_u64(&s->spill_lat_sum_ns, 0);
	d->lat_max_ns = pg_atomic_exchange_u64(&s->spill_lat_max_ns, 0);
}

void
counters_return_spill(const CounterDelta *d)
{
	add_spill(d);
}

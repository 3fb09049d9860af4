/*-------------------------------------------------------------------------
 * heavy.c
 *		Space-Saving summaries of folded callers and folded APIs (see
 *		heavy.h for the algorithm, its bound and the locking rules).
 *
 * Each summary is one block of shared memory: a header, a min-heap of
 * counter numbers ordered by count, an open-addressing index (linear
 * probing, backward-shift deletion) from a group key's hash to its
 * counter, and the counters, whose size depends on the dimension (the
 * text a counter keeps: a user id, or an API's method and path).  A ring
 * slot holds the five summaries of one minute, one block after another.
 * Keys are hashed with etab_hash, which is
 * keyed by a secret drawn at server start, so no client can aim at a slot.
 * Everything is sized at server start; nothing here allocates on the
 * commit path.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <sys/socket.h>

#include "common/hashfn.h"
#include "storage/shmem.h"
#include "utils/inet.h"
#include "utils/timestamp.h"

#include "entry_table.h"
#include "guc.h"
#include "heavy.h"

const char *const heavy_dim_names[HEAVY_NDIMS] = {"ip_user", "ip", "user", "net", "api"};

/*
 * A Bloom filter (Bloom 1970) of the caller keys folded in each minute of
 * the ring: 2^21 bits, blocked (Putze, Sanders and Singler, "Cache-, hash-
 * and space-efficient Bloom filters", 2007): a key's 3 bits are in one
 * 512-bit block, one cache line, so a fold costs one cache miss here
 * instead of three; set with atomic ORs.  It never says "not folded" of a key that
 * was: an entry made for a key it does not hold is exact, so its caller
 * needs no bound for calls a summary may have forgotten (counters.h,
 * "late").  Under a large flood it fills up and answers "maybe" to all,
 * which only makes the bounds conservative.
 */
#define BLOOM_BITS		(1 << 21)
#define BLOOM_WORDS		(BLOOM_BITS / 32)
#define BLOOM_PROBES	3
#define BLOOM_BLOCK_BITS	512
#define BLOOM_BLOCKS	(BLOOM_BITS / BLOOM_BLOCK_BITS)

/*
 * A counter in shared memory.  data holds calls[nslots] and errors[nslots],
 * then the counter's text (not NUL-terminated, text_cap(dim) bytes): the
 * user id of a caller group, or the method and path of a folded API.
 */
typedef struct SummaryCounter
{
	CounterKey	key;
	uint32		hash;
	int16		text_len;
	int16		method_len;		/* HEAVY_API: the text's first bytes */
	uint64		count;
	uint64		error;
	uint32		data[FLEXIBLE_ARRAY_MEMBER];
} SummaryCounter;

typedef struct Summary
{
	int32		minute;			/* PG_INT32_MIN: none */
	int32		n;				/* counters in use */
	int32		dim;			/* HeavyDim */
	int32		pad;
	uint64		folded;
	uint64		evictions;
	/* then: HeapItem heap[m], int32 heap_pos[m], IndexSlot index[index_size], counters */
} Summary;

/*
 * The min-heap holds each counter's count beside its number, so that a
 * sift compares within the heap's own 32 kB and never reads the counters.
 */
typedef struct HeapItem
{
	uint64		count;
	int32		c;				/* counter number */
	int32		pad;
} HeapItem;

/*
 * An index slot holds its counter's hash beside the counter's number, so
 * that a probe, and the backward shift of a deletion, compare hashes
 * within the index and read a counter only when its hash matches.
 */
typedef struct IndexSlot
{
	int32		c;				/* counter number, or -1 */
	uint32		hash;
} IndexSlot;

static char *summaries = NULL;	/* HEAVY_RING * HEAVY_NDIMS blocks */
static pg_atomic_uint32 *blooms = NULL; /* HEAVY_RING filters of BLOOM_WORDS */
static LWLockPadded *heavy_locks = NULL;
static int	m_counters = 0;
static uint32 index_size = 0;
static Size counter_size[HEAVY_NDIMS];
static Size block_size[HEAVY_NDIMS];
static Size ring_size = 0;		/* the summaries of one ring slot */
static int	nslots = 0;

int
heavy_capacity(void)
{
	return apicount_heavy_counters;
}

int
heavy_lwlock_count(void)
{
	return HEAVY_RING;
}

/* the bytes of text a counter of dim keeps */
static inline int
text_cap(int dim)
{
	return dim == HEAVY_API ? APICOUNT_MAX_METHOD + APICOUNT_MAX_PATH :
		APICOUNT_MAX_USER;
}

static void
compute_layout(void)
{
	int			d;

	nslots = 60 / apicount_slot_seconds;
	m_counters = apicount_heavy_counters;
	index_size = 16;
	while (index_size < (uint32) (2 * m_counters))
		index_size <<= 1;
	ring_size = 0;
	for (d = 0; d < HEAVY_NDIMS; d++)
	{
		counter_size[d] = MAXALIGN(offsetof(SummaryCounter, data) +
								   sizeof(uint32) * 2 * nslots + text_cap(d));
		block_size[d] = MAXALIGN(sizeof(Summary)) +
			MAXALIGN(sizeof(HeapItem) * m_counters) +
			MAXALIGN(sizeof(int32) * m_counters) +
			MAXALIGN(sizeof(IndexSlot) * index_size) +
			counter_size[d] * m_counters;
		ring_size += block_size[d];
	}
}

/* the summaries, then the filters from a cache line boundary on */
static Size
shmem_size(void)
{
	return add_size(mul_size(ring_size, HEAVY_RING),
					sizeof(pg_atomic_uint32) * BLOOM_WORDS * HEAVY_RING +
					PG_CACHE_LINE_SIZE);
}

Size
heavy_shmem_size(void)
{
	compute_layout();
	return shmem_size();
}

static inline pg_atomic_uint32 *
bloom_of(int ring)
{
	return blooms + (Size) ring * BLOOM_WORDS;
}

/*
 * The filter's bit positions of a caller key, from ip_user_hash: the hash
 * of its (API, IP, user id) group (heavy_project), which a fold computes
 * anyway.  Its low bits pick the block; a mix of it gives the 3 bits in the
 * block (9 bits each).  Two keys share all positions only when their
 * 32-bit hashes are equal.
 */
static void
bloom_positions(uint32 ip_user_hash, uint32 *pos)
{
	uint32		block = ip_user_hash % BLOOM_BLOCKS;
	uint32		bits = murmurhash32(ip_user_hash ^ 0x5bd1e995);
	int			i;

	for (i = 0; i < BLOOM_PROBES; i++)
		pos[i] = block * BLOOM_BLOCK_BITS +
			((bits >> (9 * i)) % BLOOM_BLOCK_BITS);
}

static inline Summary *
summary_at(int ring, HeavyDim dim)
{
	char	   *p = summaries + ring_size * ring;
	int			d;

	for (d = 0; d < dim; d++)
		p += block_size[d];
	return (Summary *) p;
}

/* the dimension of a summary (set once, at server start) */
static inline int
dim_of(Summary *s)
{
	return s->dim;
}

static inline HeapItem *
heap_of(Summary *s)
{
	return (HeapItem *) ((char *) s + MAXALIGN(sizeof(Summary)));
}

/* a counter's position in the heap */
static inline int32 *
heap_pos_of(Summary *s)
{
	return (int32 *) ((char *) heap_of(s) + MAXALIGN(sizeof(HeapItem) * m_counters));
}

static inline IndexSlot *
index_of(Summary *s)
{
	return (IndexSlot *) ((char *) heap_pos_of(s) + MAXALIGN(sizeof(int32) * m_counters));
}

static inline SummaryCounter *
counter_at(Summary *s, int i)
{
	return (SummaryCounter *) ((char *) index_of(s) +
							   MAXALIGN(sizeof(IndexSlot) * index_size) +
							   counter_size[dim_of(s)] * i);
}

static inline uint32 *
counter_slots(SummaryCounter *sc)
{
	return sc->data;
}

static inline char *
counter_text(SummaryCounter *sc)
{
	return (char *) (sc->data + 2 * nslots);
}

/* one lock for the summaries of a minute: a fold updates all four at once */
static inline LWLock *
summary_lock(int ring)
{
	return &heavy_locks[ring].lock;
}

static inline int
ring_of(int32 minute)
{
	return (int) (((int64) minute % HEAVY_RING + HEAVY_RING) % HEAVY_RING);
}

static void
reset_summary(Summary *s, int32 minute)
{
	IndexSlot  *index = index_of(s);
	uint32		i;

	s->minute = minute;
	s->n = 0;
	s->folded = 0;
	s->evictions = 0;
	for (i = 0; i < index_size; i++)
		index[i].c = -1;
}

/* the minute of ring slot r in the window [now - 2, now + 1] */
static int32
ring_minute(int r, int32 now_minute)
{
	int32		first = now_minute - 2;

	return first + ((r - ring_of(first)) % HEAVY_RING + HEAVY_RING) % HEAVY_RING;
}

void
heavy_shmem_init(LWLockPadded *locks)
{
	bool		found;

	compute_layout();
	heavy_locks = locks;
	summaries = ShmemInitStruct("apicount heavy callers", shmem_size(),
								&found);
	blooms = (pg_atomic_uint32 *)
		CACHELINEALIGN(summaries + ring_size * HEAVY_RING);
	if (!found)
	{
		int32		now_minute = apicount_minute_of(GetCurrentTimestamp());
		int			r,
					d;

		for (r = 0; r < HEAVY_RING; r++)
		{
			for (d = 0; d < HEAVY_NDIMS; d++)
			{
				summary_at(r, d)->dim = d;
				reset_summary(summary_at(r, d), ring_minute(r, now_minute));
			}
			for (d = 0; d < BLOOM_WORDS; d++)
				pg_atomic_init_u32(&bloom_of(r)[d], 0);
		}
	}
}

void
heavy_mask_net(CounterKey *key)
{
	int			bits;
	int			len;
	int			i;

	if (key->ip_family == 0)
		return;
	len = key->ip_family == PGSQL_AF_INET ? 4 : 16;
	bits = key->ip_family == PGSQL_AF_INET ? apicount_net_prefix_v4 :
		apicount_net_prefix_v6;
	for (i = 0; i < len; i++)
	{
		int			keep = Max(0, Min(8, bits - 8 * i));

		key->ip_addr[i] &= (uint8) (0xFF00 >> keep);
	}
	key->ip_bits = (uint8) bits;
}

void
heavy_project(const CounterKey *caller, HeavyDim dim, CounterKey *group)
{
	*group = *caller;
	group->flags = 0;
	group->pad = 0;
	if (dim == HEAVY_USER)
	{
		group->ip_family = 0;
		group->ip_bits = 0;
		memset(group->ip_addr, 0, sizeof(group->ip_addr));
	}
	if (dim == HEAVY_IP || dim == HEAVY_NET)
		group->user_h = 0;
	if (dim == HEAVY_NET)
		heavy_mask_net(group);
}

/* ---- the index: hash -> counter number ----------------------------- */

static int
index_find(Summary *s, const CounterKey *key, uint32 hash)
{
	IndexSlot  *index = index_of(s);
	uint32		mask = index_size - 1;
	uint32		pos = hash & mask;

	for (;;)
	{
		int32		c = index[pos].c;

		if (c < 0)
			return -1;
		if (index[pos].hash == hash &&
			memcmp(&counter_at(s, c)->key, key, sizeof(CounterKey)) == 0)
			return c;
		pos = (pos + 1) & mask;
	}
}

static void
index_insert(Summary *s, int c, uint32 hash)
{
	IndexSlot  *index = index_of(s);
	uint32		mask = index_size - 1;
	uint32		pos = hash & mask;

	while (index[pos].c >= 0)
		pos = (pos + 1) & mask;
	index[pos].c = c;
	index[pos].hash = hash;
}

static void
index_delete(Summary *s, int c, uint32 hash)
{
	IndexSlot  *index = index_of(s);
	uint32		mask = index_size - 1;
	uint32		pos = hash & mask;
	uint32		next;

	while (index[pos].c != c)
		pos = (pos + 1) & mask;
	index[pos].c = -1;
	/* backward shift: move up later slots whose home is not in (pos, next] */
	next = (pos + 1) & mask;
	while (index[next].c >= 0)
	{
		uint32		home = index[next].hash & mask;

		if (((next - home) & mask) >= ((next - pos) & mask))
		{
			index[pos] = index[next];
			index[next].c = -1;
			pos = next;
		}
		next = (next + 1) & mask;
	}
}

/* ---- the min-heap of counters by count ----------------------------- */

static inline void
heap_set(Summary *s, int pos, HeapItem item)
{
	heap_of(s)[pos] = item;
	heap_pos_of(s)[item.c] = pos;
}

static void
sift_up(Summary *s, int pos)
{
	HeapItem   *heap = heap_of(s);
	HeapItem	item = heap[pos];

	while (pos > 0)
	{
		int			parent = (pos - 1) / 2;

		if (heap[parent].count <= item.count)
			break;
		heap_set(s, pos, heap[parent]);
		pos = parent;
	}
	heap_set(s, pos, item);
}

static void
sift_down(Summary *s, int pos)
{
	HeapItem   *heap = heap_of(s);
	HeapItem	item = heap[pos];

	for (;;)
	{
		int			child = 2 * pos + 1;

		if (child >= s->n)
			break;
		if (child + 1 < s->n && heap[child + 1].count < heap[child].count)
			child++;
		if (heap[child].count >= item.count)
			break;
		heap_set(s, pos, heap[child]);
		pos = child;
	}
	heap_set(s, pos, item);
}

static void
add_slots(SummaryCounter *sc, const LocalSlot *slots)
{
	uint32	   *cnt = counter_slots(sc);
	int			i;

	for (i = 0; i < nslots; i++)
	{
		cnt[i] += slots[i].calls;
		cnt[nslots + i] += slots[i].errors;
	}
}

/* a counter's text: a caller group's user id, or an API's method and path */
typedef struct CounterText
{
	const char *first;
	int			first_len;
	const char *second;			/* HEAVY_API: the path */
	int			second_len;
} CounterText;

static void
set_text(SummaryCounter *sc, int cap, const CounterText *t)
{
	char	   *text = counter_text(sc);
	int			a = Min(t->first_len, cap);
	int			b = Min(t->second_len, cap - a);

	if (a > 0)
		memcpy(text, t->first, a);
	if (b > 0)
		memcpy(text + a, t->second, b);
	sc->method_len = t->second != NULL ? (int16) a : 0;
	sc->text_len = (int16) (a + b);
}

/* one Space-Saving update of weight calls (the summary's lock held) */
static void
summary_add(Summary *s, const CounterKey *key, uint32 hash,
			const CounterText *t, uint64 calls, const LocalSlot *slots)
{
	int			c = index_find(s, key, hash);
	int			cap = text_cap(dim_of(s));
	SummaryCounter *sc;

	s->folded += calls;
	if (c >= 0)
	{
		int			pos = heap_pos_of(s)[c];

		sc = counter_at(s, c);
		sc->count += calls;
		add_slots(sc, slots);
		heap_of(s)[pos].count = sc->count;
		sift_down(s, pos);
		return;
	}
	if (s->n < m_counters)
	{
		c = s->n++;
		sc = counter_at(s, c);
		sc->key = *key;
		sc->hash = hash;
		set_text(sc, cap, t);
		sc->count = calls;
		sc->error = 0;
		memset(counter_slots(sc), 0, sizeof(uint32) * 2 * nslots);
		add_slots(sc, slots);
		index_insert(s, c, hash);
		{
			HeapItem	item = {calls, c, 0};

			heap_set(s, s->n - 1, item);
		}
		sift_up(s, s->n - 1);
		return;
	}
	/* full: the key takes the counter with the smallest count */
	c = heap_of(s)[0].c;
	sc = counter_at(s, c);
	index_delete(s, c, sc->hash);
	sc->error = sc->count;
	sc->count += calls;
	sc->key = *key;
	sc->hash = hash;
	set_text(sc, cap, t);
	memset(counter_slots(sc), 0, sizeof(uint32) * 2 * nslots);
	add_slots(sc, slots);
	index_insert(s, c, hash);
	heap_of(s)[0].count = sc->count;
	sift_down(s, 0);
	s->evictions++;
}

/*
 * Set a caller's bits in the Bloom filter of its ring slot (full barriers:
 * atomic ORs).  Done whatever minute the slot holds: a slot of another
 * minute only gains false positives.
 */
static void
set_bloom_bits(int r, uint32 ip_user_hash)
{
	uint32		pos[BLOOM_PROBES];
	pg_atomic_uint32 *bloom = bloom_of(r);
	int			i;

	bloom_positions(ip_user_hash, pos);
	for (i = 0; i < BLOOM_PROBES; i++)
		pg_atomic_fetch_or_u32(&bloom[pos[i] / 32], (uint32) 1 << (pos[i] % 32));
}

void
heavy_note_fold(const CounterKey *caller)
{
	CounterKey	g;

	if (summaries == NULL)
		return;
	heavy_project(caller, HEAVY_IP_USER, &g);
	set_bloom_bits(ring_of(caller->minute), etab_hash(&g));
}

bool
heavy_add(const CounterKey *caller, const char *user, int user_len,
		  uint64 calls, uint64 errors, const LocalSlot *slots)
{
	int			r = ring_of(caller->minute);
	int			d;
	bool		added = false;
	CounterKey	g[HEAVY_CALLER_DIMS];
	uint32		hash[HEAVY_CALLER_DIMS];

	if (summaries == NULL || calls == 0)
		return false;
	for (d = 0; d < HEAVY_CALLER_DIMS; d++)
	{
		heavy_project(caller, d, &g[d]);
		hash[d] = etab_hash(&g[d]);
	}
	/* its Bloom bits were set by heavy_note_fold, before the fold */
	{
		LWLock	   *lock = summary_lock(r);

		LWLockAcquire(lock, LW_EXCLUSIVE);
		if (summary_at(r, HEAVY_IP_USER)->minute == caller->minute)
		{
			CounterText t = {NULL, 0, NULL, 0};

			for (d = 0; d < HEAVY_CALLER_DIMS; d++)
			{
				t.first = g[d].user_h != 0 ? user : NULL;
				t.first_len = g[d].user_h != 0 ? user_len : 0;
				summary_add(summary_at(r, d), &g[d], hash[d], &t, calls, slots);
			}
			added = true;
		}
		LWLockRelease(lock);
	}
	return added;
}

bool
heavy_add_api(const CounterKey *api, const char *method, int method_len,
			  const char *path, int path_len, uint64 calls,
			  const LocalSlot *slots)
{
	int			r = ring_of(api->minute);
	CounterKey	g;
	uint32		hash;
	bool		added = false;
	LWLock	   *lock;

	if (summaries == NULL || calls == 0)
		return false;
	memset(&g, 0, sizeof(g));
	g.minute = api->minute;
	g.method_h = api->method_h;
	g.path_h = api->path_h;
	hash = etab_hash(&g);
	lock = summary_lock(r);
	LWLockAcquire(lock, LW_EXCLUSIVE);
	if (summary_at(r, HEAVY_API)->minute == api->minute)
	{
		CounterText t = {method, Min(method_len, APICOUNT_MAX_METHOD),
		path, Min(path_len, APICOUNT_MAX_PATH)};

		summary_add(summary_at(r, HEAVY_API), &g, hash, &t, calls, slots);
		added = true;
	}
	LWLockRelease(lock);
	return added;
}

HeavySnapshot *
heavy_snapshot(HeavyDim dim, int32 minute)
{
	int			r = ring_of(minute);
	LWLock	   *lock = summary_lock(r);
	Summary    *s = summary_at(r, dim);
	HeavySnapshot *snap;
	int			i;

	LWLockAcquire(lock, LW_SHARED);
	if (s->minute != minute)
	{
		LWLockRelease(lock);
		return NULL;
	}
	snap = palloc0(sizeof(HeavySnapshot));
	snap->dim = dim;
	snap->minute = minute;
	snap->folded = s->folded;
	snap->n = s->n;
	snap->min_count = (s->evictions > 0 && s->n > 0) ?
		heap_of(s)[0].count : 0;
	snap->counters = palloc_extended(sizeof(HeavyCounter) * Max(s->n, 1),
									 MCXT_ALLOC_HUGE);
	for (i = 0; i < s->n; i++)
	{
		SummaryCounter *sc = counter_at(s, i);
		HeavyCounter *hc = &snap->counters[i];

		hc->key = sc->key;
		if (dim == HEAVY_API)
		{
			hc->user_len = 0;
			hc->method_len = sc->method_len;
			memcpy(hc->method, counter_text(sc), sc->method_len);
			hc->path_len = sc->text_len - sc->method_len;
			memcpy(hc->path, counter_text(sc) + sc->method_len, hc->path_len);
		}
		else
		{
			hc->user_len = sc->text_len;
			memcpy(hc->user, counter_text(sc), sc->text_len);
			hc->method_len = hc->path_len = 0;
		}
		hc->user[hc->user_len] = '\0';
		hc->method[hc->method_len] = '\0';
		hc->path[hc->path_len] = '\0';
		hc->count = sc->count;
		hc->error = sc->error;
		memcpy(hc->slot_calls, counter_slots(sc), sizeof(uint32) * nslots);
		memcpy(hc->slot_errors, counter_slots(sc) + nslots, sizeof(uint32) * nslots);
	}
	LWLockRelease(lock);
	return snap;
}

int
heavy_due_minutes(int32 cutoff, int32 *minutes)
{
	int			r;
	int			n = 0;

	for (r = 0; r < HEAVY_RING; r++)
	{
		LWLock	   *lock = summary_lock(r);
		int32		m;

		LWLockAcquire(lock, LW_SHARED);
		m = summary_at(r, HEAVY_IP_USER)->minute;
		LWLockRelease(lock);
		if (m < cutoff)
			minutes[n++] = m;
	}
	return n;
}

void
heavy_retire(int32 minute, int32 now_minute)
{
	int			r = ring_of(minute);
	int32		next = ring_minute(r, now_minute);
	int			d;

	/*
	 * The filter first: a key folded between this reset and the summaries'
	 * reset sets its bits again, so the filter stays a superset of the
	 * minute's folded keys (a fold for the new minute before its summaries
	 * exist is "unsummarized" anyway).
	 */
	for (d = 0; d < BLOOM_WORDS; d++)
		pg_atomic_write_u32(&bloom_of(r)[d], 0);

	LWLockAcquire(summary_lock(r), LW_EXCLUSIVE);
	for (d = 0; d < HEAVY_NDIMS; d++)
	{
		Summary    *s = summary_at(r, d);

		if (s->minute == minute)
			reset_summary(s, next > minute ? next : minute + HEAVY_RING);
	}
	LWLockRelease(summary_lock(r));
}

uint64
heavy_bound(int32 minute)
{
	int			r = ring_of(minute);
	uint64		bound = 0;
	int			d;

	if (summaries == NULL)
		return 0;
	LWLockAcquire(summary_lock(r), LW_SHARED);
	for (d = 0; d < HEAVY_CALLER_DIMS; d++)
	{
		Summary    *s = summary_at(r, d);

		if (s->minute == minute && s->evictions > 0 && s->n > 0)
			bound = Max(bound, heap_of(s)[0].count);
	}
	LWLockRelease(summary_lock(r));
	return bound;
}

bool
heavy_maybe_folded(const CounterKey *caller)
{
	int			r = ring_of(caller->minute);
	pg_atomic_uint32 *bloom;
	uint32		pos[BLOOM_PROBES];
	CounterKey	g;
	int			i;

	if (summaries == NULL)
		return true;
	/* a ring slot of another minute proves nothing */
	if (summary_at(r, HEAVY_IP_USER)->minute != caller->minute)
		return true;
	bloom = bloom_of(r);
	heavy_project(caller, HEAVY_IP_USER, &g);
	bloom_positions(etab_hash(&g), pos);
	for (i = 0; i < BLOOM_PROBES; i++)
		if (!(pg_atomic_read_u32(&bloom[pos[i] / 32]) & ((uint32) 1 << (pos[i] % 32))))
			return false;
	return true;
}

uint64
heavy_counter_errors(const HeavyCounter *hc)
{
	uint64		errors = 0;
	int			i;

	for (i = 0; i < nslots; i++)
		errors += hc->slot_errors[i];
	return errors;
}

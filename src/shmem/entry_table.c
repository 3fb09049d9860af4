/*-------------------------------------------------------------------------
 * entry_table.c
 *		Shared pool of counter entries with a per-partition open-addressing
 *		index (linear probing, backward-shift deletion).
 *
 * Index slots hold entry number + 1 (0 = empty) in their low 26 bits and
 * the top 6 bits of the key's hash above them, so that a probe reads an
 * entry (a cache miss) only when those bits match: a lookup of a key that
 * is not there rarely touches an entry at all.  Each partition's index
 * has a power-of-two size of at least twice its share of the pool and is
 * never filled past 3/4: a partition at that load reports "no room", as a
 * full pool does, and its hits go to overflow.  With a uniform hash a
 * partition holds about 1/16 of the entries, so this does not happen
 * before the pool itself is full.
 *
 * Locking rules: see entry_table.h.  A deletion shifts index slots of its
 * own partition only, under that partition's exclusive lock.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "storage/shmem.h"
#include "storage/spin.h"

#include "entry_table.h"
#include "hash_mix.h"
#include "prefault.h"

typedef struct EtabHeader
{
	slock_t		mutex;			/* protects free_head and free_next[] */
	uint32		free_head;		/* entry number + 1, 0 = none */
	uint32		pool_size;
	uint32		index_mask;		/* per-partition index size - 1 */
	pg_atomic_uint32 in_use_count;
	uint32		part_used[COUNTER_PARTITIONS];	/* under the partition lock */
} EtabHeader;

#define SLOT_NUMBER_BITS	26
#define SLOT_NUMBER_MASK	((((uint32) 1) << SLOT_NUMBER_BITS) - 1)

static EtabHeader *hdr = NULL;
static char *pool = NULL;		/* pool_size entries of entry_size bytes */
static Size entry_size = 0;
static uint8 *in_use = NULL;	/* pool_size flags */
static uint32 *free_next = NULL;	/* free list links */
static uint32 *index_slots = NULL;	/* COUNTER_PARTITIONS x (mask + 1) */

static uint32
index_size_for(int64 capacity)
{
	uint32		want = (uint32) (2 * (capacity / COUNTER_PARTITIONS + 1));
	uint32		size = 16;

	while (size < want)
		size <<= 1;
	return size;
}

Size
etab_shmem_size(int64 capacity, Size esize)
{
	Size		size = TYPEALIGN(8, sizeof(EtabHeader));

	size = add_size(size, mul_size((Size) capacity, TYPEALIGN(8, esize)));
	size = add_size(size, MAXALIGN((Size) capacity));
	size = add_size(size, MAXALIGN(mul_size((Size) capacity, sizeof(uint32))));
	size = add_size(size, mul_size(mul_size(COUNTER_PARTITIONS,
											index_size_for(capacity)),
								   sizeof(uint32)));
	return size;
}

void
etab_shmem_init(int64 capacity, Size esize)
{
	bool		found;
	char	   *base;
	uint32		isize = index_size_for(capacity);

	/* apicount.max_entries (at most 50,000,000, guc.c) stays below this */
	if (capacity >= (int64) SLOT_NUMBER_MASK)
		elog(FATAL, "apicount: %lld counter entries do not fit the index",
			 (long long) capacity);

	entry_size = TYPEALIGN(8, esize);	/* entries hold 64-bit atomics */
	base = ShmemInitStruct("apicount counter entries",
						   etab_shmem_size(capacity, esize), &found);
	hdr = (EtabHeader *) base;
	base += TYPEALIGN(8, sizeof(EtabHeader));
	pool = base;
	base += (Size) capacity * entry_size;
	in_use = (uint8 *) base;
	base += MAXALIGN((Size) capacity);
	free_next = (uint32 *) base;
	base += MAXALIGN((Size) capacity * sizeof(uint32));
	index_slots = (uint32 *) base;

	if (!found)
	{
		uint32		i;

		SpinLockInit(&hdr->mutex);
		hdr->pool_size = (uint32) capacity;
		hdr->index_mask = isize - 1;
		pg_atomic_init_u32(&hdr->in_use_count, 0);
		memset(hdr->part_used, 0, sizeof(hdr->part_used));
		memset(in_use, 0, (Size) capacity);
		memset(index_slots, 0,
			   (Size) COUNTER_PARTITIONS * isize * sizeof(uint32));
		/* free list in ascending order, so the pool fills from its start */
		for (i = 0; i < (uint32) capacity; i++)
			free_next[i] = (i + 1 < (uint32) capacity) ? i + 2 : 0;
		hdr->free_head = capacity > 0 ? 1 : 0;
	}
}

bool
etab_ready(void)
{
	return hdr != NULL;
}

static inline CounterEntry *
entry_at(uint32 n)
{
	return (CounterEntry *) (pool + (Size) n * entry_size);
}

static inline uint32
entry_number(const CounterEntry *e)
{
	return (uint32) (((const char *) e - pool) / entry_size);
}

/* the hash bits an index slot keeps beside the entry number */
static inline uint32
slot_tag(uint32 hashcode)
{
	return hashcode & ~SLOT_NUMBER_MASK;
}

/* entry number + 1 of an index slot (0: empty) */
static inline uint32
slot_number(uint32 v)
{
	return v & SLOT_NUMBER_MASK;
}

static inline uint32 *
part_index(uint32 hashcode)
{
	return index_slots + (Size) (hashcode % COUNTER_PARTITIONS) *
		(hdr->index_mask + 1);
}

static inline uint32
home_slot(uint32 hashcode)
{
	return (hashcode / COUNTER_PARTITIONS) & hdr->index_mask;
}

/*
 * The 32-bit hash of a counter key, for the shared index and the backends'
 * pending indexes.  The key is six 64-bit words: the three string hashes,
 * the minute and flags, and the IP address (keys are zeroed before they are
 * filled, so padding is always 0).  Each word is xor-ed with a secret drawn
 * from the per-server random seed, pairs of words are multiplied into 128
 * bits and folded, and the three results are folded the same way: without
 * the seed nobody can choose keys (client IPs, say) whose hashes collide
 * to lengthen probe sequences.  Where the compiler has no 128-bit integer,
 * each word goes through the MurmurHash3 finalizer instead.
 */
static uint64 key_secret[7];
static uint64 key_secret_seed = 0;
static bool key_secret_ready = false;

static void
derive_key_secrets(void)
{
	uint64		x = apicount_hash_seed;
	int			i;

	for (i = 0; i < lengthof(key_secret); i++)
	{
		x += UINT64CONST(0x9e3779b97f4a7c15);	/* splitmix64 */
		key_secret[i] = apicount_mix64(x) | 1;
	}
	key_secret_seed = apicount_hash_seed;
	key_secret_ready = true;
}

#ifdef HAVE_INT128
static inline uint64
fold_product(uint64 a, uint64 b)
{
	uint128		r = (uint128) a * b;

	return (uint64) r ^ (uint64) (r >> 64);
}
#endif

StaticAssertDecl(sizeof(CounterKey) == 6 * sizeof(uint64),
				 "etab_hash reads a counter key as six 64-bit words");

uint32
etab_hash(const CounterKey *key)
{
	uint64		w[6];
	uint64		h;

	if (unlikely(!key_secret_ready || key_secret_seed != apicount_hash_seed))
		derive_key_secrets();
	memcpy(w, key, sizeof(w));
#ifdef HAVE_INT128
	{
		uint64		a = fold_product(w[0] ^ key_secret[0], w[1] ^ key_secret[1]);
		uint64		b = fold_product(w[2] ^ key_secret[2], w[3] ^ key_secret[3]);
		uint64		c = fold_product(w[4] ^ key_secret[4], w[5] ^ key_secret[5]);

		h = fold_product(a ^ key_secret[6], b ^ c);
	}
#else
	{
		int			i;

		h = key_secret[6];
		for (i = 0; i < 6; i++)
			h = apicount_mix64(h ^ w[i] ^ key_secret[i]);
	}
#endif
	return (uint32) (h ^ (h >> 32));
}

/*
 * Probe the partition's index for key: the entry, or NULL with *pos at the
 * empty slot that ends the probe (where the key would go).
 */
static CounterEntry *
probe(const CounterKey *key, uint32 hashcode, uint32 **slots, uint32 *pos)
{
	uint32		tag = slot_tag(hashcode);

	*slots = part_index(hashcode);
	*pos = home_slot(hashcode);
	for (;;)
	{
		uint32		v = (*slots)[*pos];

		if (v == 0)
			return NULL;
		if (slot_tag(v) == tag)
		{
			CounterEntry *e = entry_at(slot_number(v) - 1);

			if (memcmp(&e->key, key, sizeof(CounterKey)) == 0)
				return e;
		}
		*pos = (*pos + 1) & hdr->index_mask;
	}
}

void
etab_prefetch(uint32 hashcode)
{
#if defined(__GNUC__) || defined(__clang__)
	__builtin_prefetch(&part_index(hashcode)[home_slot(hashcode)]);
#endif
}

CounterEntry *
etab_find(const CounterKey *key, uint32 hashcode)
{
	uint32	   *slots;
	uint32		pos;

	return probe(key, hashcode, &slots, &pos);
}

CounterEntry *
etab_enter(const CounterKey *key, uint32 hashcode, bool *found)
{
	uint32	   *slots;
	uint32		part = hashcode % COUNTER_PARTITIONS;
	uint32		pos;
	uint32		n;
	CounterEntry *e;

	e = probe(key, hashcode, &slots, &pos);
	*found = e != NULL;
	if (e != NULL)
		return e;

	/* at most 3/4 full, so that probes stay short and always end */
	if ((hdr->part_used[part] + 1) * 4 > (hdr->index_mask + 1) * 3)
		return NULL;

	SpinLockAcquire(&hdr->mutex);
	n = hdr->free_head;
	if (n != 0)
		hdr->free_head = free_next[n - 1];
	SpinLockRelease(&hdr->mutex);
	if (n == 0)
		return NULL;

	e = entry_at(n - 1);
	memset(e, 0, entry_size);
	e->key = *key;
	in_use[n - 1] = 1;
	hdr->part_used[part]++;
	pg_atomic_fetch_add_u32(&hdr->in_use_count, 1);
	/* publish last: a reader of the slot sees a complete entry */
	pg_write_barrier();
	slots[pos] = n | slot_tag(hashcode);
	return e;
}

void
etab_remove(CounterEntry *e, uint32 hashcode)
{
	uint32	   *slots = part_index(hashcode);
	uint32		part = hashcode % COUNTER_PARTITIONS;
	uint32		mask = hdr->index_mask;
	uint32		n = entry_number(e) + 1;
	uint32		pos = home_slot(hashcode);
	uint32		next;

	while (slot_number(slots[pos]) != n)
	{
		Assert(slots[pos] != 0);
		pos = (pos + 1) & mask;
	}

	/* backward-shift deletion: keep every probe chain unbroken */
	slots[pos] = 0;
	next = (pos + 1) & mask;
	while (slots[next] != 0)
	{
		uint32		home = home_slot(etab_hash(&entry_at(slot_number(slots[next]) - 1)->key));

		/* move it if its home is not in the cyclic range (pos, next] */
		if (((next - home) & mask) >= ((next - pos) & mask))
		{
			slots[pos] = slots[next];
			slots[next] = 0;
			pos = next;
		}
		next = (next + 1) & mask;
	}

	in_use[n - 1] = 0;
	hdr->part_used[part]--;
	pg_atomic_fetch_sub_u32(&hdr->in_use_count, 1);
	SpinLockAcquire(&hdr->mutex);
	free_next[n - 1] = hdr->free_head;
	hdr->free_head = n;
	SpinLockRelease(&hdr->mutex);
}

CounterEntry *
etab_next(uint32 *cursor)
{
	uint32		i = *cursor;
	uint32		size = hdr->pool_size;

	while (i < size && !in_use[i])
		i++;
	if (i >= size)
	{
		*cursor = size;
		return NULL;
	}
	*cursor = i + 1;
	return entry_at(i);
}

uint32
etab_count(void)
{
	return pg_atomic_read_u32(&hdr->in_use_count);
}

uint32
etab_number(const CounterEntry *e)
{
	return entry_number(e);
}

uint32
etab_pool_size(void)
{
	return hdr->pool_size;
}

/*
 * Map the pool pages of the next n entries of the free list, ahead of a
 * merge that may create up to n entries (prefault.h).  The free list is in
 * ascending order until entries are freed, so after a start these are the
 * entries the merge will fill; later they are a guess, and mapping pages
 * another backend already uses changes nothing in them.  Never throws.
 */
void
etab_prefault_free(uint32 n)
{
	uint32		first;

	/* a commit of a few keys: nothing to map (and no spinlock to take) */
	if ((Size) n * entry_size < PREFAULT_MIN_BYTES)
		return;
	SpinLockAcquire(&hdr->mutex);
	first = hdr->free_head;
	SpinLockRelease(&hdr->mutex);
	if (first == 0)
		return;
	n = Min(n, hdr->pool_size - (first - 1));
	prefault_for_write(entry_at(first - 1), (Size) n * entry_size);
}

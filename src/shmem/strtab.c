/*-------------------------------------------------------------------------
 * strtab.c
 *		Shared string table with reference counts and a small arena.
 *
 * Owns the storage of the strings that counter keys refer to by hash.
 * Strings are kept in an arena of 16-byte granules with one free list per
 * size class, so that freed strings are reused without compaction.
 *
 * Locking rules: see strtab.h.  The arena spinlock is held for a few
 * instructions only and never while calling anything that can fail.  The
 * batch cache below is backend-local; the references it adds without a
 * lock go to entries the batch holds a reference (a pin) of its own on.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "port/atomics.h"
#include "storage/lwlock.h"
#include "storage/shmem.h"
#include "storage/spin.h"
#include "utils/builtins.h"
#include "utils/hsearch.h"

#include "normalize.h"
#include "strtab.h"

#define GRANULE			16
#define NCLASSES		((APICOUNT_MAX_PATH + 1 + GRANULE - 1) / GRANULE + 1)
#define ARENA_PER_ENTRY 32		/* average bytes of string per string */
#define NO_CHUNK		PG_UINT32_MAX

typedef struct StrEntry
{
	uint64		h;				/* hash key */
	pg_atomic_uint32 refs;
	uint32		off;			/* offset in the arena */
	uint16		len;
} StrEntry;

typedef struct StrArena
{
	slock_t		lock;
	uint32		size;
	uint32		bump;
	uint32		free_head[NCLASSES];
	char		bytes[FLEXIBLE_ARRAY_MEMBER];
} StrArena;

static HTAB *strtab = NULL;
static int64 strtab_max = 0;	/* strings ordinary references may fill */
static int64 strtab_reserve = 0;	/* more, for strtab_use_reserve */

bool		strtab_use_reserve = false;
static StrArena *arena = NULL;
static LWLockPadded *strtab_locks = NULL;

/*
 * The batch cache (strtab_batch_begin): strings referenced more than once
 * in one commit's merge.  The first reference of a string in the batch is
 * only noted (hash and the caller's copy); the second also takes a pin, a
 * reference of the batch's own, and keeps the entry; from then on a
 * reference is one atomic add on that entry, without the partition lock or
 * a lookup.  The pin is what keeps the entry there: the references given
 * to counter entries can be dropped at any time (the worker frees entries),
 * the pin only by strtab_batch_end.  Dynahash never moves an element.  A
 * slot belongs to the open batch while its gen equals batch_gen; a pinned
 * slot is never taken over by another string.
 */
#define BATCH_SLOTS		1024

typedef struct BatchSlot
{
	uint64		h;
	StrEntry   *e;				/* set once pinned */
	const char *s;				/* the caller's copy, valid in the batch */
	int			len;
	uint32		gen;
	bool		pinned;
} BatchSlot;

static BatchSlot batch_cache[BATCH_SLOTS];
static uint16 batch_pins[BATCH_SLOTS];	/* slots pinned in the open batch */
static int	batch_npins = 0;
static uint32 batch_gen = 0;	/* generation of the open batch */
static bool batch_open = false;

static inline BatchSlot *
batch_slot(uint64 h)
{
	return &batch_cache[(h ^ (h >> 32)) % BATCH_SLOTS];
}

static Size
arena_bytes(int64 capacity)
{
	return (Size) capacity * ARENA_PER_ENTRY;
}

Size
strtab_shmem_size(int64 capacity)
{
	Size		size;

	size = hash_estimate_size(capacity, sizeof(StrEntry));
	size = add_size(size, offsetof(StrArena, bytes));
	size = add_size(size, arena_bytes(capacity));
	return size;
}

void
strtab_shmem_init(int64 capacity, int64 reserve, LWLockPadded *locks)
{
	HASHCTL		info;
	bool		found;
	int			i;

	strtab_locks = locks;
	strtab_max = capacity;
	strtab_reserve = reserve;
	capacity += reserve;
	memset(&info, 0, sizeof(info));
	info.keysize = sizeof(uint64);
	info.entrysize = sizeof(StrEntry);
	info.num_partitions = STRTAB_PARTITIONS;
	strtab = ShmemInitHash("apicount strings", capacity, capacity, &info,
						   HASH_ELEM | HASH_BLOBS | HASH_PARTITION |
						   HASH_FIXED_SIZE);

	arena = ShmemInitStruct("apicount string arena",
							offsetof(StrArena, bytes) + arena_bytes(capacity),
							&found);
	if (!found)
	{
		SpinLockInit(&arena->lock);
		arena->size = (uint32) Min(arena_bytes(capacity), (Size) PG_UINT32_MAX - 1);
		arena->bump = 0;
		for (i = 0; i < NCLASSES; i++)
			arena->free_head[i] = NO_CHUNK;
	}
}

static inline int
size_class(int len)
{
	return (len + 1 + GRANULE - 1) / GRANULE;
}

static uint32
arena_alloc(int len)
{
	int			cls = size_class(len);
	uint32		off = NO_CHUNK;

	SpinLockAcquire(&arena->lock);
	if (arena->free_head[cls] != NO_CHUNK)
	{
		off = arena->free_head[cls];
		memcpy(&arena->free_head[cls], arena->bytes + off, sizeof(uint32));
	}
	else if ((uint64) arena->bump + cls * GRANULE <= arena->size)
	{
		off = arena->bump;
		arena->bump += cls * GRANULE;
	}
	SpinLockRelease(&arena->lock);
	return off;
}

static void
arena_free(uint32 off, int len)
{
	int			cls = size_class(len);

	SpinLockAcquire(&arena->lock);
	memcpy(arena->bytes + off, &arena->free_head[cls], sizeof(uint32));
	arena->free_head[cls] = off;
	SpinLockRelease(&arena->lock);
}

static inline LWLock *
partition_lock(uint32 hashcode)
{
	return &strtab_locks[hashcode % STRTAB_PARTITIONS].lock;
}

static inline bool
same_string(StrEntry *e, const char *s, int len)
{
	return e->len == len && memcmp(arena->bytes + e->off, s, len) == 0;
}

void
strtab_batch_begin(void)
{
	Assert(!batch_open && batch_npins == 0);
	if (++batch_gen == 0)
	{
		/* wrapped: slots of an old batch could carry the new generation */
		memset(batch_cache, 0, sizeof(batch_cache));
		batch_gen = 1;
	}
	batch_open = true;
}

void
strtab_batch_end(void)
{
	int			i;

	batch_open = false;
	for (i = 0; i < batch_npins; i++)
	{
		BatchSlot  *b = &batch_cache[batch_pins[i]];

		b->pinned = false;
		b->gen = 0;
		strtab_unref(b->h);
	}
	batch_npins = 0;
}

/* is b the open batch's slot of this string (bytes compared)? */
static inline bool
batch_has(const BatchSlot *b, uint64 h, const char *s, int len)
{
	return b->gen == batch_gen && b->h == h && b->len == len &&
		memcmp(b->s, s, len) == 0;
}

/*
 * After a reference to e was taken (pin: with the batch's own): note the
 * string, or keep its pinned entry.  A slot pinned by another string stays.
 */
static inline void
batch_note(BatchSlot *b, uint64 h, StrEntry *e, const char *s, int len,
		   bool pin)
{
	if (pin)
	{
		b->e = e;
		b->pinned = true;
		batch_pins[batch_npins++] = (uint16) (b - batch_cache);
		return;
	}
	if (b->gen == batch_gen && b->pinned)
		return;
	b->h = h;
	b->e = NULL;
	b->s = s;
	b->len = len;
	b->gen = batch_gen;
	b->pinned = false;
}

bool
strtab_ref(uint64 h, const char *s, int len)
{
	uint32		hashcode;
	LWLock	   *lock;
	StrEntry   *e;
	bool		found;
	bool		ok;
	BatchSlot  *b = NULL;
	bool		pin = false;

	if (h == 0)
		return true;
	Assert(len <= APICOUNT_MAX_PATH);
	if (batch_open)
	{
		b = batch_slot(h);
		if (batch_has(b, h, s, len))
		{
			/* pinned: there for the whole batch */
			if (b->pinned)
			{
				pg_atomic_fetch_add_u32(&b->e->refs, 1);
				return true;
			}
			pin = true;			/* its second reference: pin it too */
		}
	}
	hashcode = get_hash_value(strtab, &h);
	lock = partition_lock(hashcode);

	/* existing string: shared lock and an atomic reference */
	LWLockAcquire(lock, LW_SHARED);
	e = hash_search_with_hash_value(strtab, &h, hashcode, HASH_FIND, NULL);
	if (e != NULL)
	{
		ok = same_string(e, s, len);
		if (ok)
			pg_atomic_fetch_add_u32(&e->refs, pin ? 2 : 1);
		LWLockRelease(lock);
		if (ok && b != NULL)
			batch_note(b, h, e, s, len, pin);
		return ok;
	}
	LWLockRelease(lock);

	/* new string: past strtab_max only from the reserve */
	if (!strtab_use_reserve && (int64) hash_get_num_entries(strtab) >= strtab_max)
		return false;
	LWLockAcquire(lock, LW_EXCLUSIVE);
	e = hash_search_with_hash_value(strtab, &h, hashcode, HASH_ENTER_NULL,
									&found);
	if (e == NULL)
		ok = false;
	else if (found)
	{
		ok = same_string(e, s, len);
		if (ok)
			pg_atomic_fetch_add_u32(&e->refs, pin ? 2 : 1);
	}
	else
	{
		uint32		off = arena_alloc(len);

		if (off == NO_CHUNK)
		{
			hash_search_with_hash_value(strtab, &h, hashcode, HASH_REMOVE,
										NULL);
			ok = false;
		}
		else
		{
			memcpy(arena->bytes + off, s, len);
			arena->bytes[off + len] = '\0';
			e->off = off;
			e->len = len;
			pg_atomic_init_u32(&e->refs, pin ? 2 : 1);
			ok = true;
		}
	}
	LWLockRelease(lock);
	if (ok && b != NULL)
		batch_note(b, h, e, s, len, pin);
	return ok;
}

void
strtab_unref(uint64 h)
{
	uint32		hashcode;
	LWLock	   *lock;
	StrEntry   *e;
	uint32		left;

	if (h == 0)
		return;
	hashcode = get_hash_value(strtab, &h);
	lock = partition_lock(hashcode);

	LWLockAcquire(lock, LW_SHARED);
	e = hash_search_with_hash_value(strtab, &h, hashcode, HASH_FIND, NULL);
	Assert(e != NULL);
	left = e ? pg_atomic_sub_fetch_u32(&e->refs, 1) : 1;
	LWLockRelease(lock);
	if (left > 0)
		return;

	/* last reference gone: remove unless someone took a new one meanwhile */
	LWLockAcquire(lock, LW_EXCLUSIVE);
	e = hash_search_with_hash_value(strtab, &h, hashcode, HASH_FIND, NULL);
	if (e != NULL && pg_atomic_read_u32(&e->refs) == 0)
	{
		arena_free(e->off, e->len);
		hash_search_with_hash_value(strtab, &h, hashcode, HASH_REMOVE, NULL);
	}
	LWLockRelease(lock);
}

int
strtab_get(uint64 h, char *buf, int bufsize)
{
	uint32		hashcode;
	LWLock	   *lock;
	StrEntry   *e;
	int			len = -1;

	hashcode = get_hash_value(strtab, &h);
	lock = partition_lock(hashcode);
	LWLockAcquire(lock, LW_SHARED);
	e = hash_search_with_hash_value(strtab, &h, hashcode, HASH_FIND, NULL);
	if (e != NULL)
	{
		len = Min((int) e->len, bufsize - 1);
		memcpy(buf, arena->bytes + e->off, len);
		buf[len] = '\0';
	}
	LWLockRelease(lock);
	return len;
}

text *
strtab_get_text(uint64 h)
{
	char		buf[APICOUNT_MAX_PATH + 1];
	int			len = strtab_get(h, buf, sizeof(buf));

	return len < 0 ? NULL : cstring_to_text_with_len(buf, len);
}

int64
strtab_count(void)
{
	return (int64) hash_get_num_entries(strtab);
}

int64
strtab_capacity(void)
{
	return strtab_max;
}

/*-------------------------------------------------------------------------
 * string_memo.c
 *		Backend-local memo of recently seen methods and paths.
 *
 * Apps send the same few methods and a few hundred paths over and over;
 * normalizing a path and hashing it costs more than comparing it with
 * what it was last time.  The memo maps the bytes as sent to the
 * normalized string and its hash (apicount_hash_string): two direct-mapped
 * tables, 16 slots for methods (indexed by length, first and last byte)
 * and 512 for paths (indexed by a cheap hash of the bytes as sent), each
 * slot confirmed by comparing the bytes in full.  A miss or an
 * evicted slot only costs the normal path; only strings of at most
 * MEMO_MAX_LEN bytes, that normalized without error, are remembered.
 *
 * Memory rule: static arrays of this backend, no allocation.  A MemoHit
 * points into a slot, which the next memo_remember_* may overwrite, so
 * callers copy what they keep.  The hash seed never changes within a
 * backend's life (a new one comes only with new shared memory, after every
 * backend has exited), so remembered hashes stay valid.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "string_memo.h"

typedef struct MemoSlot
{
	int16		raw_len;		/* -1: empty */
	int16		norm_len;
	bool		normalized;		/* apicount.normalize_paths when remembered */
	uint64		hash;
	char		raw[MEMO_MAX_LEN];
	char		norm[MEMO_MAX_LEN];
} MemoSlot;

#define METHOD_SLOTS		16
#define PATH_SLOTS_BITS		9
#define PATH_SLOTS			(1 << PATH_SLOTS_BITS)

static MemoSlot method_slots[METHOD_SLOTS];
static MemoSlot path_slots[PATH_SLOTS];
static bool slots_ready = false;

/* every slot starts empty */
static void
init_slots(void)
{
	int			i;

	for (i = 0; i < METHOD_SLOTS; i++)
		method_slots[i].raw_len = -1;
	for (i = 0; i < PATH_SLOTS; i++)
		path_slots[i].raw_len = -1;
	slots_ready = true;
}

/*
 * Slot number of a path as sent: its length and its first, middle and last
 * 8 bytes (paths that differ only inside, such as in an id segment, should
 * rarely share a slot).
 */
static inline uint32
path_slot_of(const char *raw, int len)
{
	uint64		a = 0;
	uint64		b = 0;
	uint64		c = 0;

	if (len >= 8)
	{
		memcpy(&a, raw, 8);
		memcpy(&b, raw + len - 8, 8);
		memcpy(&c, raw + len / 2 - 4, 8);
	}
	else
		memcpy(&a, raw, len);
	a ^= (b << 29 | b >> 35) ^ (c * UINT64CONST(0xc2b2ae3d27d4eb4f)) ^
		((uint64) len * UINT64CONST(0x9e3779b97f4a7c15));
	return (uint32) ((a * UINT64CONST(0xd6e8feb86659fd93)) >> (64 - PATH_SLOTS_BITS));
}

/* a method's slot: RFC 9110's eight and PATCH, upper case, get one each */
static inline uint32
method_slot_of(const char *raw, int len)
{
	if (len == 0)
		return 0;
	return ((uint32) (unsigned char) raw[0] * 3 +
			(uint32) (unsigned char) raw[len - 1] * 5 + (uint32) len) %
		METHOD_SLOTS;
}

static inline bool
slot_matches(const MemoSlot *s, const char *raw, int len)
{
	int			i;

	if (s->raw_len != len)
		return false;
	/* a method is a few bytes: compared in line, cheaper than a call */
	if (len <= 8)
	{
		for (i = 0; i < len; i++)
			if (s->raw[i] != raw[i])
				return false;
		return true;
	}
	return memcmp(s->raw, raw, len) == 0;
}

static inline void
fill_hit(const MemoSlot *s, MemoHit *hit)
{
	hit->norm = s->norm;
	hit->norm_len = s->norm_len;
	hit->hash = s->hash;
}

static void
remember(MemoSlot *s, const char *raw, int len, bool normalized,
		 const char *norm, int norm_len, uint64 hash)
{
	if (len > MEMO_MAX_LEN || norm_len > MEMO_MAX_LEN)
		return;
	memcpy(s->raw, raw, len);
	memcpy(s->norm, norm, norm_len);
	s->raw_len = (int16) len;
	s->norm_len = (int16) norm_len;
	s->normalized = normalized;
	s->hash = hash;
}

bool
memo_method(const char *raw, int len, MemoHit *hit)
{
	const MemoSlot *s;

	if (!slots_ready)
		return false;
	s = &method_slots[method_slot_of(raw, len)];
	if (!slot_matches(s, raw, len))
		return false;
	fill_hit(s, hit);
	return true;
}

void
memo_remember_method(const char *raw, int len, const char *norm, int norm_len,
					 uint64 hash)
{
	if (!slots_ready)
		init_slots();
	remember(&method_slots[method_slot_of(raw, len)], raw, len, false,
			 norm, norm_len, hash);
}

bool
memo_path(const char *raw, int len, bool normalized, MemoHit *hit)
{
	const MemoSlot *s;

	if (len > MEMO_MAX_LEN || !slots_ready)
		return false;
	s = &path_slots[path_slot_of(raw, len)];
	if (!slot_matches(s, raw, len) || s->normalized != normalized)
		return false;
	fill_hit(s, hit);
	return true;
}

void
memo_remember_path(const char *raw, int len, bool normalized,
				   const char *norm, int norm_len, uint64 hash)
{
	if (len > MEMO_MAX_LEN)
		return;
	if (!slots_ready)
		init_slots();
	remember(&path_slots[path_slot_of(raw, len)], raw, len, normalized,
			 norm, norm_len, hash);
}

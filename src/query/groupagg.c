/*-------------------------------------------------------------------------
 * groupagg.c
 *		Fingerprint-keyed open-addressing table for grouping live entries.
 *
 * Owns the per-query aggregation of live.c.  Cheaper than a dynahash over
 * the 48-byte key: the fingerprint mixes fields that are already hashes,
 * and the key is compared only when fingerprints match.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "groupagg.h"
#include "hash_mix.h"

uint64
groupkey_fingerprint(const GroupKey *k)
{
	uint64		a0,
				a1;
	uint64		h;

	memcpy(&a0, k->ip_addr, sizeof(a0));
	memcpy(&a1, k->ip_addr + 8, sizeof(a1));
	h = apicount_mix64(a0 ^ apicount_mix64(a1 ^ ((uint64) (uint32) k->minute |
								((uint64) k->ip_family << 32) |
								((uint64) k->ip_bits << 40))));
	h = apicount_mix64(h ^ k->user_h);
	h = apicount_mix64(h ^ k->path_h);
	h = apicount_mix64(h ^ k->method_h);
	return h;
}

static void
build_table(GroupAgg *agg, uint32 size)
{
	int			i;

	agg->table = palloc_extended(sizeof(int32) * size, MCXT_ALLOC_HUGE | MCXT_ALLOC_ZERO);
	agg->mask = size - 1;
	for (i = 0; i < agg->nrows; i++)
	{
		uint32		pos = (uint32) agg->row_fp[i] & agg->mask;

		while (agg->table[pos] != 0)
			pos = (pos + 1) & agg->mask;
		agg->table[pos] = i + 1;
	}
}

GroupAgg *
groupagg_create(int expected)
{
	GroupAgg   *agg = palloc0(sizeof(GroupAgg));
	uint32		size = 64;

	while (size < (uint32) Max(expected, 16) * 2)
		size <<= 1;
	agg->cap = Max(expected, 16);
	agg->rows = palloc_extended(sizeof(GroupRow) * agg->cap, MCXT_ALLOC_HUGE);
	agg->row_fp = palloc_extended(sizeof(uint64) * agg->cap, MCXT_ALLOC_HUGE);
	build_table(agg, size);
	return agg;
}

/* the row number + 1 of the group, or 0 with *pos its free table slot */
static int32
probe(GroupAgg *agg, const GroupKey *k, uint64 fp, uint32 *pos)
{
	uint32		p = (uint32) fp & agg->mask;

	for (;;)
	{
		int32		slot = agg->table[p];

		if (slot == 0 ||
			(agg->row_fp[slot - 1] == fp &&
			 memcmp(&agg->rows[slot - 1].key, k, sizeof(GroupKey)) == 0))
		{
			*pos = p;
			return slot;
		}
		p = (p + 1) & agg->mask;
	}
}

GroupRow *
groupagg_find(GroupAgg *agg, const GroupKey *k, uint64 fp)
{
	uint32		pos;
	int32		slot = probe(agg, k, fp, &pos);

	return slot == 0 ? NULL : &agg->rows[slot - 1];
}

GroupRow *
groupagg_get(GroupAgg *agg, const GroupKey *k, uint64 fp)
{
	uint32		pos;
	int32		slot = probe(agg, k, fp, &pos);
	GroupRow   *row;

	if (slot != 0)
		return &agg->rows[slot - 1];

	/* new group; keep the table at most half full */
	if (agg->nrows == agg->cap)
	{
		agg->cap *= 2;
		agg->rows = repalloc_huge(agg->rows, sizeof(GroupRow) * agg->cap);
		agg->row_fp = repalloc_huge(agg->row_fp, sizeof(uint64) * agg->cap);
	}
	row = &agg->rows[agg->nrows];
	memset(row, 0, sizeof(GroupRow));
	row->key = *k;
	agg->row_fp[agg->nrows] = fp;
	agg->nrows++;
	if ((uint32) agg->nrows * 2 > agg->mask + 1)
	{
		pfree(agg->table);
		build_table(agg, (agg->mask + 1) * 2);
	}
	else
		agg->table[pos] = agg->nrows;
	return row;
}

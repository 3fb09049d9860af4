/*-------------------------------------------------------------------------
 * requests_slot.c
 *		The tuple slot of apicount.requests: a virtual slot (a values and a
 *		nulls array, no physical tuple) that materializes into a buffer of
 *		its own, reused row after row.
 *
 * COPY materializes every row it batches (the row's values live in memory
 * reset for the next row) and INSERT materializes its row too.  The core
 * virtual slot allocates a chunk for every row and frees it when the slot
 * is cleared; this slot copies the row's by-reference values into one
 * buffer, allocated in the slot's memory context, which grows when a row
 * needs more and is kept for the next row.  Everything else is as in a
 * virtual slot: no system columns, and a heap tuple only as a copy.
 *
 * Memory rule: values point into the buffer only while owns_values is set.
 * Clearing the slot unsets it and keeps the buffer, unless the buffer is
 * larger than KEEP_BUFFER_BYTES (a row with a huge value must not leave
 * each of COPY's thousand batch slots holding that much); releasing the
 * slot frees the buffer.  A materialize that finds owns_values set does
 * nothing, so the buffer is never reallocated while values point into it.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "executor/tuptable.h"
#include "utils/expandeddatum.h"

#include "compat.h"
#include "requests_slot.h"

#define KEEP_BUFFER_BYTES	8192

typedef struct RequestsSlot
{
	TupleTableSlot base;
	char	   *buf;			/* by-reference values, in base.tts_mcxt */
	Size		bufsize;
	bool		owns_values;	/* by-reference values point into buf */
	/* the by-reference attributes of byref_desc, found once */
	TupleDesc	byref_desc;
	int			nbyref;
	int		   *byref;			/* their numbers (0-based) */
	Size	   *sizes;			/* scratch: their sizes in the row at hand */
} RequestsSlot;

static void
rslot_init(TupleTableSlot *slot)
{
	RequestsSlot *rs = (RequestsSlot *) slot;

	rs->buf = NULL;
	rs->bufsize = 0;
	rs->owns_values = false;
	rs->byref_desc = NULL;
	rs->nbyref = 0;
	rs->byref = NULL;
	rs->sizes = NULL;
}

static void
rslot_release(TupleTableSlot *slot)
{
	RequestsSlot *rs = (RequestsSlot *) slot;

	if (rs->buf != NULL)
		pfree(rs->buf);
	if (rs->byref != NULL)
		pfree(rs->byref);
	if (rs->sizes != NULL)
		pfree(rs->sizes);
	rslot_init(slot);
}

static void
rslot_clear(TupleTableSlot *slot)
{
	RequestsSlot *rs = (RequestsSlot *) slot;

	if (rs->bufsize > KEEP_BUFFER_BYTES)
	{
		pfree(rs->buf);
		rs->buf = NULL;
		rs->bufsize = 0;
	}
	rs->owns_values = false;
	slot->tts_nvalid = 0;
	slot->tts_flags |= TTS_FLAG_EMPTY;
	ItemPointerSetInvalid(&slot->tts_tid);
}

static void
rslot_getsomeattrs(TupleTableSlot *slot, int natts)
{
	/* like a virtual slot: every attribute is valid once stored */
	elog(ERROR, "getsomeattrs is not required to be called on a virtual tuple table slot");
}

static Datum
rslot_getsysattr(TupleTableSlot *slot, int attnum, bool *isnull)
{
	ereport(ERROR,
			(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
			 errmsg("cannot retrieve a system column in this context")));
	return (Datum) 0;			/* keep compiler quiet */
}

/* bytes a by-reference value needs once flat */
static Size
flat_size(Form_pg_attribute att, Datum v)
{
	if (att->attlen == -1)
	{
		if (VARATT_IS_EXTERNAL_EXPANDED(DatumGetPointer(v)))
			return EOH_get_flat_size(DatumGetEOHP(v));
		return VARSIZE_ANY(DatumGetPointer(v));
	}
	if (att->attlen == -2)
		return strlen(DatumGetCString(v)) + 1;
	return att->attlen;
}

/* list the by-reference attributes of the slot's descriptor */
static void
find_byref_attrs(RequestsSlot *rs, TupleDesc desc)
{
	MemoryContext cxt = rs->base.tts_mcxt;
	int			i;

	if (rs->byref != NULL)
		pfree(rs->byref);
	if (rs->sizes != NULL)
		pfree(rs->sizes);
	rs->byref = MemoryContextAlloc(cxt, sizeof(int) * Max(desc->natts, 1));
	rs->sizes = MemoryContextAlloc(cxt, sizeof(Size) * Max(desc->natts, 1));
	rs->nbyref = 0;
	for (i = 0; i < desc->natts; i++)
		if (!TupleDescAttr(desc, i)->attbyval)
			rs->byref[rs->nbyref++] = i;
	rs->byref_desc = desc;
}

static void
rslot_materialize(TupleTableSlot *slot)
{
	RequestsSlot *rs = (RequestsSlot *) slot;
	TupleDesc	desc = slot->tts_tupleDescriptor;
	Datum	   *values = slot->tts_values;
	const bool *isnull = slot->tts_isnull;
	const int  *byref;
	Size	   *sizes;
	int			nbyref;
	Size		need = 0;
	char	   *p;
	int			k;

	Assert(!TTS_EMPTY(slot));
	if (rs->owns_values)
		return;
	if (rs->byref_desc != desc)
		find_byref_attrs(rs, desc);
	byref = rs->byref;
	sizes = rs->sizes;
	nbyref = rs->nbyref;

	for (k = 0; k < nbyref; k++)
	{
		int			i = byref[k];
		Size		size = isnull[i] ? 0 :
			flat_size(TupleDescAttr(desc, i), values[i]);

		sizes[k] = size;
		need += MAXALIGN(size);
	}
	if (need > rs->bufsize)
	{
		/* small rows: grow by doubling up to the size kept; larger: exact */
		Size		size = need > KEEP_BUFFER_BYTES ? need :
			Min(Max(need, Max(2 * rs->bufsize, 256)), KEEP_BUFFER_BYTES);
		char	   *nbuf = MemoryContextAllocHuge(slot->tts_mcxt, size);

		/* no value points into the old buffer (owns_values is unset) */
		if (rs->buf != NULL)
			pfree(rs->buf);
		rs->buf = nbuf;
		rs->bufsize = size;
	}

	p = rs->buf;
	for (k = 0; k < nbyref; k++)
	{
		int			i = byref[k];
		Pointer		v = DatumGetPointer(values[i]);
		Size		size = sizes[k];

		if (size == 0)			/* null (a value is never 0 bytes) */
			continue;
		if (TupleDescAttr(desc, i)->attlen == -1 &&
			unlikely(VARATT_IS_EXTERNAL_EXPANDED(v)))
			EOH_flatten_into(DatumGetEOHP(PointerGetDatum(v)), p, size);
		else
			memcpy(p, v, size);
		values[i] = PointerGetDatum(p);
		p += MAXALIGN(size);
	}
	rs->owns_values = true;
}

static void
rslot_copyslot(TupleTableSlot *dstslot, TupleTableSlot *srcslot)
{
	int			natts = srcslot->tts_tupleDescriptor->natts;

	Assert(natts <= dstslot->tts_tupleDescriptor->natts);
	rslot_clear(dstslot);
	slot_getallattrs(srcslot);
	memcpy(dstslot->tts_values, srcslot->tts_values, natts * sizeof(Datum));
	memcpy(dstslot->tts_isnull, srcslot->tts_isnull, natts * sizeof(bool));
	dstslot->tts_nvalid = natts;
	dstslot->tts_flags &= ~TTS_FLAG_EMPTY;
	/* the copy must not depend on the source's memory */
	rslot_materialize(dstslot);
}

static HeapTuple
rslot_copy_heap_tuple(TupleTableSlot *slot)
{
	Assert(!TTS_EMPTY(slot));
	return heap_form_tuple(slot->tts_tupleDescriptor, slot->tts_values,
						   slot->tts_isnull);
}

static MinimalTuple
rslot_copy_minimal_tuple(TupleTableSlot *slot APICOUNT_MINTUP_EXTRA_PARAM)
{
	Assert(!TTS_EMPTY(slot));
	return apicount_form_minimal_tuple(slot->tts_tupleDescriptor,
									   slot->tts_values, slot->tts_isnull,
									   extra);
}

void
requests_slot_prefetch(TupleTableSlot *slot)
{
#if defined(__GNUC__) || defined(__clang__)
	RequestsSlot *rs = (RequestsSlot *) slot;

	__builtin_prefetch(slot->tts_values);
	__builtin_prefetch(slot->tts_isnull);
	if (slot->tts_ops == &apicount_requests_slot_ops && rs->owns_values)
	{
		__builtin_prefetch(rs->buf);
		__builtin_prefetch(rs->buf + 64);
	}
#endif
}

const TupleTableSlotOps apicount_requests_slot_ops = {
	.base_slot_size = sizeof(RequestsSlot),
	.init = rslot_init,
	.release = rslot_release,
	.clear = rslot_clear,
	.getsomeattrs = rslot_getsomeattrs,
	.getsysattr = rslot_getsysattr,
	.materialize = rslot_materialize,
	.copyslot = rslot_copyslot,
	/* no physical tuple inside, as in a virtual slot */
	.get_heap_tuple = NULL,
	.get_minimal_tuple = NULL,
	.copy_heap_tuple = rslot_copy_heap_tuple,
	.copy_minimal_tuple = rslot_copy_minimal_tuple
};

/*-------------------------------------------------------------------------
 * latency_sql.c
 *		SQL functions over latency histograms: the merge used by the flush
 *		upserts, the latency_merge aggregate, percentiles, counts, and the
 *		live (unflushed) histograms read from shared memory.
 *
 * Memory rule: aggregate states live in the aggregate's memory context
 * (AggCheckCallContext); everything else in the current context.
 * Lock rule (live read): pages are copied under the latency store's
 * shared locks, strings resolved only after they are released.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <math.h>

#include "fmgr.h"
#include "funcapi.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/timestamp.h"

#include "counters.h"
#include "filter.h"
#include "preload.h"
#include "latency_codec.h"
#include "latency_store.h"
#include "strtab.h"

PG_FUNCTION_INFO_V1(apicount_latency_hist_add);
PG_FUNCTION_INFO_V1(apicount_latency_merge_accum);
PG_FUNCTION_INFO_V1(apicount_latency_merge_final);
PG_FUNCTION_INFO_V1(apicount_latency_percentile);
PG_FUNCTION_INFO_V1(apicount_latency_count);
PG_FUNCTION_INFO_V1(apicount_live_latency);

static void
invalid_histogram(void)
{
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_BINARY_REPRESENTATION),
			 errmsg("invalid apicount latency histogram"),
			 errdetail("The value is not in the format of api_minute.latency_hist (version %d).",
					   LAT_FORMAT_VERSION)));
}

static void
decode_into(bytea *b, uint64 *dense)
{
	if (lat_decode_add((const uint8 *) VARDATA_ANY(b), VARSIZE_ANY_EXHDR(b),
					   dense) != 0)
		invalid_histogram();
}

/*
 * apicount._latency_hist_add(a bytea, b bytea) -> bytea: the merge of two
 * histograms (either may be NULL).
 */
Datum
apicount_latency_hist_add(PG_FUNCTION_ARGS)
{
	uint64	   *dense;

	if (PG_ARGISNULL(0) && PG_ARGISNULL(1))
		PG_RETURN_NULL();
	if (PG_ARGISNULL(0))
		PG_RETURN_DATUM(PG_GETARG_DATUM(1));
	if (PG_ARGISNULL(1))
		PG_RETURN_DATUM(PG_GETARG_DATUM(0));
	dense = palloc0(sizeof(uint64) * LAT_NBUCKETS);
	decode_into(PG_GETARG_BYTEA_PP(0), dense);
	decode_into(PG_GETARG_BYTEA_PP(1), dense);
	PG_RETURN_BYTEA_P(lat_dense_to_bytea(dense));
}

/*
 * latency_merge(bytea): the state is NULL until a value, then that value
 * as it came (a group of one row, common when a query reads a coarser
 * tier, keeps its 100-odd bytes), and a dense histogram from the second
 * value on (LAT_NBUCKETS counters, about 7 kB: thousands of groups of one
 * row each would otherwise make a sort or hash spill to disk).
 */
typedef struct MergeState
{
	bytea	   *first;			/* the only value so far, or NULL */
	uint64	   *dense;			/* the sum, once there are two values */
} MergeState;

Datum
apicount_latency_merge_accum(PG_FUNCTION_ARGS)
{
	MemoryContext aggcxt;
	MergeState *st;

	if (!AggCheckCallContext(fcinfo, &aggcxt))
		elog(ERROR, "apicount_latency_merge_accum called in non-aggregate context");
	if (PG_ARGISNULL(0))
	{
		bytea	   *v;

		if (PG_ARGISNULL(1))
			PG_RETURN_NULL();
		v = PG_GETARG_BYTEA_PP(1);	/* detoasted */
		st = MemoryContextAllocZero(aggcxt, sizeof(MergeState));
		st->first = (bytea *) MemoryContextAlloc(aggcxt, VARSIZE_ANY(v));
		memcpy(st->first, v, VARSIZE_ANY(v));
		PG_RETURN_POINTER(st);
	}
	st = (MergeState *) PG_GETARG_POINTER(0);
	if (PG_ARGISNULL(1))
		PG_RETURN_POINTER(st);
	if (st->dense == NULL)
	{
		st->dense = MemoryContextAllocZero(aggcxt, sizeof(uint64) * LAT_NBUCKETS);
		decode_into(st->first, st->dense);
		pfree(st->first);
		st->first = NULL;
	}
	decode_into(PG_GETARG_BYTEA_PP(1), st->dense);
	PG_RETURN_POINTER(st);
}

Datum
apicount_latency_merge_final(PG_FUNCTION_ARGS)
{
	MergeState *st;

	if (PG_ARGISNULL(0))
		PG_RETURN_NULL();
	st = (MergeState *) PG_GETARG_POINTER(0);
	if (st->dense == NULL)
	{
		/* one value: itself, as lat_dense_to_bytea would have encoded it */
		uint64	   *dense = palloc0(sizeof(uint64) * LAT_NBUCKETS);

		decode_into(st->first, dense);
		PG_RETURN_BYTEA_P(lat_dense_to_bytea(dense));
	}
	PG_RETURN_BYTEA_P(lat_dense_to_bytea(st->dense));
}

static void
check_percentile(double p)
{
	if (isnan(p) || p < 0.0 || p > 1.0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("percentile %g is not between 0 and 1", p),
				 errhint("Write the 95th percentile as 0.95.")));
}

/* latency_percentile(hist bytea, percentile float8) -> float8 ms */
Datum
apicount_latency_percentile(PG_FUNCTION_ARGS)
{
	double		p = PG_GETARG_FLOAT8(1);
	bytea	   *b = PG_GETARG_BYTEA_PP(0);
	double		v = -1.0;

	check_percentile(p);
	if (lat_encoded_percentile_ms((const uint8 *) VARDATA_ANY(b),
								  VARSIZE_ANY_EXHDR(b), p, &v) != 0)
		invalid_histogram();
	if (v < 0)
		PG_RETURN_NULL();
	PG_RETURN_FLOAT8(v);
}

/* latency_count(hist bytea) -> bigint: latencies in the histogram */
Datum
apicount_latency_count(PG_FUNCTION_ARGS)
{
	uint64	   *dense = palloc0(sizeof(uint64) * LAT_NBUCKETS);

	decode_into(PG_GETARG_BYTEA_PP(0), dense);
	PG_RETURN_INT64((int64) lat_total(dense));
}

typedef struct LiveHist
{
	uint64		method_h;
	uint64		path_h;
	int32		minute;
	LatPageList pages;
} LiveHist;

/*
 * apicount._live_latency(from_bucket timestamptz, to_ts timestamptz
 * [, paths text[], method text]): unflushed histograms per API and minute,
 * for minutes starting in [from_bucket, to_ts), of the given paths and
 * method only (0.4; NULL: any).
 */
Datum
apicount_live_latency(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	TimestampTz from_ts;
	TimestampTz to_ts;
	int32		from_minute,
				to_minute;
	HashFilter	fpaths,
				fmethod;
	LatSnap    *snap;
	int			nsnap,
				nhist = 0,
				i;
	LiveHist  **hists;
	uint64	   *dense;
	HTAB	   *index;
	HASHCTL		ctl;

	apicount_require_preload();
	InitMaterializedSRF(fcinfo, 0);
	/* from 0.4 on the function is not strict (its filters may be NULL) */
	if (PG_ARGISNULL(0) || PG_ARGISNULL(1))
		return (Datum) 0;
	from_ts = PG_GETARG_TIMESTAMPTZ(0);
	to_ts = PG_GETARG_TIMESTAMPTZ(1);
	filter_from_args(fcinfo, 2, &fpaths, &fmethod);
	/* minutes starting in [from_ts, to_ts), as _live_minutes */
	from_minute = apicount_minute_at_or_after(from_ts);
	to_minute = apicount_minute_before(to_ts);
	snap = latstore_snapshot(from_minute, to_minute, &nsnap);

	/* group the pages per (method, path, minute) */
	memset(&ctl, 0, sizeof(ctl));
	ctl.keysize = offsetof(LiveHist, pages);
	ctl.entrysize = sizeof(LiveHist);
	ctl.hcxt = CurrentMemoryContext;
	index = hash_create("apicount live latency", Max(nsnap, 16), &ctl,
						HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
	hists = palloc(sizeof(LiveHist *) * Max(nsnap, 1));
	for (i = 0; i < nsnap; i++)
	{
		LiveHist	k;
		LiveHist   *h;
		bool		found;

		if (!filter_pass(&fpaths, snap[i].key.path_h) ||
			!filter_pass(&fmethod, snap[i].key.method_h))
			continue;
		memset(&k, 0, sizeof(k));
		k.method_h = snap[i].key.method_h;
		k.path_h = snap[i].key.path_h;
		k.minute = snap[i].key.minute;
		h = hash_search(index, &k, HASH_ENTER, &found);
		if (!found)
		{
			memset(&h->pages, 0, sizeof(LatPageList));
			hists[nhist++] = h;
		}
		lat_pages_append(&h->pages, i);
	}

	dense = palloc0(sizeof(uint64) * LAT_NBUCKETS);
	for (i = 0; i < nhist; i++)
	{
		LiveHist   *h = hists[i];
		Datum		values[4];
		bool		nulls[4] = {false, false, false, false};
		text	   *m = strtab_get_text(h->method_h);
		text	   *p = strtab_get_text(h->path_h);

		/* strings gone: their API's counts went to overflow */
		if (m == NULL || p == NULL)
		{
			m = cstring_to_text(ANY_METHOD);
			p = cstring_to_text(OTHER_PATH);
		}
		values[0] = TimestampTzGetDatum(apicount_minute_start(h->minute));
		values[1] = PointerGetDatum(m);
		values[2] = PointerGetDatum(p);
		values[3] = PointerGetDatum(lat_pages_to_bytea(snap, &h->pages, dense));
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	return (Datum) 0;
}

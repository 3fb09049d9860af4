/*-------------------------------------------------------------------------
 * tiers.c
 *		Which tier answers which part of a range: the reading plan that every
 *		range query (series, minutes, latency_percentiles, top_apis,
 *		top_callers_range, callers) follows, computed once here.
 *
 *		apicount._retention_secs() -> (minute_secs, hour_secs, day_secs):
 *			each tier's retention as the worker applies it
 *			(apicount_retention_tier_secs, common/guc.c: a month is 30 days,
 *			so '13 months' is 390 days; 0.4 to 0.6 computed it in SQL with
 *			extract(epoch), which counts 12 months as 365.25 days, and read
 *			minutes the worker had deleted as if still kept).
 *		apicount._tier_plan(from_bucket, to_ts, coarsest) -> (f, ha, d0, d1,
 *			hb, t): days [d0, d1) from the day tier, hours [ha, d0) and
 *			[d1, hb) from the hour tier, minutes [f, ha) and [hb, t) from the
 *			minute tier, f <= ha <= d0 <= d1 <= hb <= t (tiers.h).
 *		apicount._tier_of_step(step) -> the coarsest tier a step can read.
 *
 * Timestamps are microseconds from 2000-01-01 00:00 UTC, a UTC midnight, so
 * a UTC hour or day boundary is a multiple of the unit: no time zone is
 * involved.  now() is the transaction's start, as in SQL.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "access/xact.h"
#include "fmgr.h"
#include "funcapi.h"
#include "utils/timestamp.h"

#include "guc.h"
#include "preload.h"
#include "tiers.h"
#include "window.h"

PG_FUNCTION_INFO_V1(apicount_retention_secs_sql);
PG_FUNCTION_INFO_V1(apicount_tier_plan);
PG_FUNCTION_INFO_V1(apicount_tier_of_step);

/* the UTC unit boundary at or before ts (date_trunc(unit, ts, 'UTC')) */
static TimestampTz
floor_to(TimestampTz ts, int64 unit)
{
	int64		r;

	if (TIMESTAMP_NOT_FINITE(ts))
		return ts;
	r = ts % unit;
	return r < 0 ? ts - r - unit : ts - r;
}

/* the UTC unit boundary at or after ts (apicount._ceil_to(ts, unit)) */
static TimestampTz
ceil_to(TimestampTz ts, int64 unit)
{
	TimestampTz f = floor_to(ts, unit);

	return f < ts ? f + unit : f;
}

void
apicount_tier_plan_compute(TimestampTz from, TimestampTz to, int coarsest,
						   TimestampTz now, ApicountTierPlan *pl)
{
	/* minutes are read from a0 on, hours from a1 on (retention) */
	TimestampTz a0 = ceil_to(now - apicount_retention_tier_secs(0) * USECS_PER_SEC,
							 USECS_PER_HOUR);
	TimestampTz a1 = ceil_to(now - apicount_retention_tier_secs(1) * USECS_PER_SEC,
							 USECS_PER_DAY);
	TimestampTz f,
				t;

	/* the ends, widened where their tier is gone */
	f = from < a1 ? floor_to(from, USECS_PER_DAY) :
		from < a0 ? floor_to(from, USECS_PER_HOUR) : from;
	t = to <= a1 ? ceil_to(to, USECS_PER_DAY) :
		to <= a0 ? ceil_to(to, USECS_PER_HOUR) : to;
	pl->f = f;
	pl->t = t;
	if (t <= f)
	{
		pl->ha = pl->hb = pl->d0 = pl->d1 = t;
		return;
	}
	/* hours */
	if (coarsest >= 1)
	{
		pl->ha = ceil_to(f, USECS_PER_HOUR);
		pl->hb = floor_to(t, USECS_PER_HOUR);
		if (pl->ha >= pl->hb)
			pl->ha = pl->hb = t;
	}
	else if (f < a0)
	{
		/*
		 * hours (and days, below) up to where minutes are kept: a0, or a1
		 * where hours are gone after a0 too (hours kept less than a day
		 * longer than minutes); 0.4 to 0.6 stopped at a0 there, and read
		 * [a0, a1) from both minutes and days
		 */
		pl->ha = f;
		pl->hb = Min(Max(a0, a1), t);
	}
	else
		pl->ha = pl->hb = t;
	/* days */
	if (coarsest >= 2 && pl->ha < pl->hb)
	{
		pl->d0 = ceil_to(pl->ha, USECS_PER_DAY);
		pl->d1 = floor_to(pl->hb, USECS_PER_DAY);
		if (pl->d0 >= pl->d1)
			pl->d0 = pl->d1 = pl->hb;
	}
	else if (f < a1)
	{
		pl->d0 = f;				/* whole days (widened) up to where hours start */
		pl->d1 = Min(a1, t);
	}
	else
		pl->d0 = pl->d1 = pl->hb;
}

/* a composite of the function's result type from its values */
static Datum
make_record(FunctionCallInfo fcinfo, Datum *values, int n)
{
	TupleDesc	tupdesc;
	bool		nulls[8] = {false};

	Assert(n <= (int) lengthof(nulls));
	if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE ||
		tupdesc->natts != n)
		elog(ERROR, "apicount: unexpected result type of a tier function");
	tupdesc = BlessTupleDesc(tupdesc);
	return HeapTupleGetDatum(heap_form_tuple(tupdesc, values, nulls));
}

Datum
apicount_retention_secs_sql(PG_FUNCTION_ARGS)
{
	Datum		values[3];
	int			i;

	apicount_require_preload();
	for (i = 0; i < 3; i++)
		values[i] = Float8GetDatum((double) apicount_retention_tier_secs(i));
	PG_RETURN_DATUM(make_record(fcinfo, values, 3));
}

Datum
apicount_tier_plan(PG_FUNCTION_ARGS)
{
	ApicountTierPlan pl;
	Datum		values[6];

	apicount_require_preload();
	apicount_tier_plan_compute(PG_GETARG_TIMESTAMPTZ(0), PG_GETARG_TIMESTAMPTZ(1),
							   PG_GETARG_INT32(2),
							   GetCurrentTransactionStartTimestamp(), &pl);
	values[0] = TimestampTzGetDatum(pl.f);
	values[1] = TimestampTzGetDatum(pl.ha);
	values[2] = TimestampTzGetDatum(pl.d0);
	values[3] = TimestampTzGetDatum(pl.d1);
	values[4] = TimestampTzGetDatum(pl.hb);
	values[5] = TimestampTzGetDatum(pl.t);
	PG_RETURN_DATUM(make_record(fcinfo, values, 6));
}

/* 2 (days) for a whole number of days, 1 (hours) for a whole number of
 * hours, else 0 (minutes); NULL (one total over the range): 2 */
Datum
apicount_tier_of_step(PG_FUNCTION_ARGS)
{
	int64		us;

	apicount_require_preload();
	if (PG_ARGISNULL(0))
		PG_RETURN_INT32(2);
	us = apicount_interval_usecs(PG_GETARG_INTERVAL_P(0));
	PG_RETURN_INT32(us % USECS_PER_DAY == 0 ? 2 : us % USECS_PER_HOUR == 0 ? 1 : 0);
}

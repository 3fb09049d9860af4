/*-------------------------------------------------------------------------
 * window.c
 *		The live horizon and the start of a sliding window, computed once
 *		here and read by the live scans (live.c) and by SQL:
 *
 *		apicount._live_horizon() -> interval: the longest window the live
 *			counters answer exactly (LIVE_HORIZON_SECS); a longer one is
 *			read from the minute rollups.
 *		apicount._window_start(since interval) -> timestamptz: the first
 *			instant of the oldest slot of the window ending at now().
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "fmgr.h"
#include "access/xact.h"
#include "utils/timestamp.h"

#include "counters.h"
#include "guc.h"
#include "window.h"

PG_FUNCTION_INFO_V1(apicount_live_horizon);
PG_FUNCTION_INFO_V1(apicount_window_start);

int64
apicount_interval_usecs(const Interval *iv)
{
	return iv->time + (int64) iv->day * USECS_PER_DAY +
		(int64) iv->month * DAYS_PER_MONTH * USECS_PER_DAY;
}

void
apicount_window_slots(int64 since_us, TimestampTz now, int64 *first, int64 *cur)
{
	int64		slot_us = (int64) apicount_slot_seconds * USECS_PER_SEC;
	int			nslots = 60 / apicount_slot_seconds;
	int32		now_minute = apicount_minute_of(now);
	int64		k;

	k = (since_us + slot_us - 1) / slot_us;
	*cur = (int64) now_minute * nslots + apicount_slot_in_minute(now, now_minute);
	*first = *cur - k + 1;
}

TimestampTz
apicount_slot_start(int64 slot)
{
	/* slots per minute times slot_seconds is 60: slot n starts n slots in */
	return (TimestampTz) (slot * apicount_slot_seconds * USECS_PER_SEC);
}

Datum
apicount_live_horizon(PG_FUNCTION_ARGS)
{
	Interval   *result = (Interval *) palloc0(sizeof(Interval));

	result->time = (int64) LIVE_HORIZON_SECS * USECS_PER_SEC;
	PG_RETURN_INTERVAL_P(result);
}

Datum
apicount_window_start(PG_FUNCTION_ARGS)
{
	int64		first,
				cur;

	apicount_window_slots(apicount_interval_usecs(PG_GETARG_INTERVAL_P(0)),
						  GetCurrentTransactionStartTimestamp(), &first, &cur);
	PG_RETURN_TIMESTAMPTZ(apicount_slot_start(first));
}

/*-------------------------------------------------------------------------
 * window.h
 *		The sliding windows' two facts, for C and SQL alike: how long a
 *		window may be (LIVE_HORIZON_SECS, apicount._live_horizon()) and
 *		which slots one covers (apicount._window_start()).
 *-------------------------------------------------------------------------
 */
#ifndef APICOUNT_WINDOW_H
#define APICOUNT_WINDOW_H

#include "datatype/timestamp.h"

/* an interval in microseconds, a month as 30 days (as extract(epoch)) */
extern int64 apicount_interval_usecs(const Interval *iv);

/*
 * The global slots [first, cur] (minute * slots per minute + slot in the
 * minute) of a sliding window of since_us ending at now: the last
 * ceil(since / slot_seconds) slots up to the one holding now.
 */
extern void apicount_window_slots(int64 since_us, TimestampTz now,
								  int64 *first, int64 *cur);

/* the first instant of a global slot */
extern TimestampTz apicount_slot_start(int64 slot);

#endif

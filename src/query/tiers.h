/*-------------------------------------------------------------------------
 * tiers.h
 *		The reading plan of a range over the minute, hour and day tiers
 *		(tiers.c; SQL: apicount._tier_plan()).
 *-------------------------------------------------------------------------
 */
#ifndef APICOUNT_TIERS_H
#define APICOUNT_TIERS_H

#include "datatype/timestamp.h"

/*
 * The plan of [from, to) with tiers up to coarsest (0 minute, 1 hour, 2
 * day): days [d0, d1), hours [ha, d0) and [d1, hb), minutes [f, ha) and
 * [hb, t), where f <= ha <= d0 <= d1 <= hb <= t.  Where a tier's rows are
 * past its retention (minutes before the first whole hour after now -
 * retention_minute; hours before the first whole day after
 * now - retention_hour), the next coarser tier answers, and the range's
 * ends there widen to that tier's buckets (f and t are the widened ends).
 */
typedef struct ApicountTierPlan
{
	TimestampTz f;
	TimestampTz ha;
	TimestampTz d0;
	TimestampTz d1;
	TimestampTz hb;
	TimestampTz t;
} ApicountTierPlan;

extern void apicount_tier_plan_compute(TimestampTz from, TimestampTz to,
									   int coarsest, TimestampTz now,
									   ApicountTierPlan *pl);

#endif

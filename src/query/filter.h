/*-------------------------------------------------------------------------
 * filter.h
 *		Path and method filters of the live scans (_live_minutes,
 *		_live_latency): applied to each entry's string hashes while the
 *		scan runs, so that a one-path query copies one path's entries.
 *-------------------------------------------------------------------------
 */
#ifndef APICOUNT_FILTER_H
#define APICOUNT_FILTER_H

#include "fmgr.h"

typedef struct HashFilter
{
	bool		active;			/* false: every string passes */
	int			n;				/* hashes in h[], sorted */
	uint64	   *h;
} HashFilter;

/*
 * Filters from argument argno (text[]: paths) and argno + 1 (text: method)
 * of the current call, when the call has them and they are not NULL.
 */
extern void filter_from_args(FunctionCallInfo fcinfo, int argno,
							 HashFilter *paths, HashFilter *method);
extern bool filter_pass(const HashFilter *f, uint64 h);

#endif

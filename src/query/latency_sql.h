/*-------------------------------------------------------------------------
 * latency_sql.h
 *		Latency histograms as bytea values: building them in C (flush_api.c)
 *		and the SQL functions over them (latency_sql.c).
 *-------------------------------------------------------------------------
 */
#ifndef APICOUNT_LATENCY_SQL_H
#define APICOUNT_LATENCY_SQL_H

#include "fmgr.h"

#include "latency_store.h"

/* a bytea in the stored format from a dense histogram (LAT_NBUCKETS counts) */
extern bytea *lat_dense_to_bytea(const uint64 *dense);

/* the snapshot pages (indexes into a LatSnap array) of one histogram */
typedef struct LatPageList
{
	int			n;
	int			cap;
	int		   *pages;
} LatPageList;

extern void lat_pages_append(LatPageList *list, int page);

/* the bytea of a list's pages; dense (LAT_NBUCKETS) is zero before and after */
extern bytea *lat_pages_to_bytea(const LatSnap *snap, const LatPageList *list,
								 uint64 *dense);

#endif

/*-------------------------------------------------------------------------
 * latency_sql.h
 *		Latency histograms as bytea values: building them in C (flush.c)
 *		and the SQL functions over them (latency_sql.c).
 *-------------------------------------------------------------------------
 */
#ifndef APICOUNT_LATENCY_SQL_H
#define APICOUNT_LATENCY_SQL_H

#include "fmgr.h"

/* a bytea in the stored format from a dense histogram (LAT_NBUCKETS counts) */
extern bytea *lat_dense_to_bytea(const uint64 *dense);

#endif

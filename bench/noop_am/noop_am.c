/*-------------------------------------------------------------------------
 * noop_am.c
 *		The floor of benchmark workload 1: apicount's own table access method
 *		(src/requests_am.c) built with the counting left out.
 *
 * bench/run.sh loads it by path (never installed) and times INSERTs into a
 * table using it beside INSERTs into apicount.requests: the difference is
 * what apicount itself costs per row; the rest is PostgreSQL's INSERT.
 *-------------------------------------------------------------------------
 */
#define APICOUNT_NOOP_AM
#include "requests_am.c"
#include "requests_slot.c"

/*-------------------------------------------------------------------------
 * noop_am.c
 *		The floor of benchmark workloads 1 and 4: apicount's own table access
 *		method (src/ingest/requests_am.c) built with the counting left out.
 *
 * bench/run.sh loads it by path (never installed) and times INSERTs and a
 * COPY into a table using it beside the same into apicount.requests: the
 * difference is what apicount itself costs per row; the rest is
 * PostgreSQL's INSERT or COPY (parsing the rows, the row slot).
 *-------------------------------------------------------------------------
 */
#define APICOUNT_NOOP_AM
#include "requests_am.c"
#include "requests_slot.c"

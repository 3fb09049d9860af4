/*-------------------------------------------------------------------------
 * flush_sql.c
 *		The SQL entry points that drive the worker: apicount.flush() and
 *		apicount._discard_stale().
 *
 * Owns nothing but the calls: each checks the preload, then asks the
 * worker for a cycle through the handshake in worker.c (worker.h) and
 * waits for it.  They run in a backend, never in the worker.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "fmgr.h"

#include "preload.h"
#include "worker.h"

PG_FUNCTION_INFO_V1(apicount_flush);
PG_FUNCTION_INFO_V1(apicount_discard_stale);

/* apicount.flush(): flush now, return the entries written */
Datum
apicount_flush(PG_FUNCTION_ARGS)
{
	apicount_require_preload();
	PG_RETURN_INT64(worker_request_flush());
}

/* apicount._discard_stale(): CREATE EXTENSION starts from empty counters */
Datum
apicount_discard_stale(PG_FUNCTION_ARGS)
{
	apicount_require_preload();
	worker_discard_stale();
	PG_RETURN_VOID();
}

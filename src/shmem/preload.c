/*-------------------------------------------------------------------------
 * preload.c
 *		The guard every SQL entry point calls first: the library was
 *		preloaded, and this PostgreSQL major is supported.
 *
 * Owns the two setup errors a user meets before any hit counts.  Without
 * shared_preload_libraries, _PG_init (apicount.c) sets nothing up and
 * there is no shared memory: every SQL function of apicount (ingest,
 * queries, the worker's entry points) then raises one error that says how
 * to configure the server.  It sits with shared memory because that is
 * what it checks (counters_ready); every stage that calls it is at or
 * above this one.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "commands/extension.h"
#include "fmgr.h"

#include "compat.h"
#include "counters.h"
#include "preload.h"

PG_FUNCTION_INFO_V1(apicount_require_preload_sql);

/*
 * CREATE EXTENSION (and ALTER EXTENSION UPDATE) on a PostgreSQL major that
 * this build compiles on but whose suites have not passed: refuse, saying
 * which majors are supported.  Checked by the install script's first call.
 */
static void
apicount_require_supported_major(void)
{
#if APICOUNT_PG_MAJOR < APICOUNT_PG_MAJOR_MIN || APICOUNT_PG_MAJOR > APICOUNT_PG_MAJOR_MAX
	if (creating_extension)
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("apicount does not support PostgreSQL %d", APICOUNT_PG_MAJOR),
				 errdetail("This server is PostgreSQL %s; apicount supports PostgreSQL %d to %d.",
						   PG_VERSION, APICOUNT_PG_MAJOR_MIN, APICOUNT_PG_MAJOR_MAX),
				 errhint("Install apicount on a server of a supported major version.")));
#endif
}

void
apicount_require_preload(void)
{
	apicount_require_supported_major();
	if (!counters_ready())
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("apicount must be loaded via shared_preload_libraries"),
				 errhint("Add apicount to shared_preload_libraries in postgresql.conf and restart the server.")));
}

/* apicount._require_preload(): the install script's first check */
Datum
apicount_require_preload_sql(PG_FUNCTION_ARGS)
{
	apicount_require_preload();
	PG_RETURN_VOID();
}

/*-------------------------------------------------------------------------
 * apicount.c
 *		Module entry point: settings, shared memory hooks, the worker and
 *		the transaction callbacks.  Nothing else lives here.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "fmgr.h"
#include "miscadmin.h"
#include "storage/ipc.h"
#include "storage/lwlock.h"
#include "storage/shmem.h"

#include "audited.h"
#include "counters.h"
#include "guc.h"
#include "pending.h"
#include "readlock.h"
#include "sources.h"
#include "worker.h"

PG_MODULE_MAGIC;

void		_PG_init(void);

static shmem_startup_hook_type prev_shmem_startup_hook = NULL;

#if PG_VERSION_NUM >= 150000
static shmem_request_hook_type prev_shmem_request_hook = NULL;
#endif

static void
apicount_shmem_request(void)
{
#if PG_VERSION_NUM >= 150000
	if (prev_shmem_request_hook)
		prev_shmem_request_hook();
#endif
	RequestAddinShmemSpace(counters_shmem_size());
	RequestNamedLWLockTranche("apicount", counters_lwlock_count());
	sources_shmem_request();
}

static void
apicount_shmem_startup(void)
{
	if (prev_shmem_startup_hook)
		prev_shmem_startup_hook();

	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	counters_shmem_init();
	sources_shmem_init();
	LWLockRelease(AddinShmemInitLock);
}

void
_PG_init(void)
{
	/*
	 * Without preloading there is no shared memory: the SQL functions then
	 * raise an error that says how to configure the server.
	 */
	if (!process_shared_preload_libraries_in_progress)
		return;

	sources_define_gucs();		/* before apicount_define_gucs reserves the prefix */
	apicount_define_gucs();

#if PG_VERSION_NUM >= 150000
	prev_shmem_request_hook = shmem_request_hook;
	shmem_request_hook = apicount_shmem_request;
#else
	apicount_shmem_request();
#endif
	prev_shmem_startup_hook = shmem_startup_hook;
	shmem_startup_hook = apicount_shmem_startup;

	pending_register_callbacks();
	audited_register_callbacks();
	readlock_register_callbacks();
	apicount_register_worker();
}

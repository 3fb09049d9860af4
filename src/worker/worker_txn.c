/*-------------------------------------------------------------------------
 * worker_txn.c
 *		Transaction and error-recovery wrapper for the worker's SQL work.
 *
 * One failing statement (a lock timeout, a dropped table) must not kill
 * the worker: the error is logged, the transaction rolled back, and the
 * worker goes on with its next cycle.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "commands/extension.h"
#include "executor/spi.h"
#include "pgstat.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"

#include "worker_txn.h"

bool
worker_run_txn(const char *what, worker_txn_fn fn, void *arg)
{
	MemoryContext oldcxt = CurrentMemoryContext;
	volatile bool ok = true;

	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	PG_TRY();
	{
		SPI_connect();
		PushActiveSnapshot(GetTransactionSnapshot());
		if (OidIsValid(get_extension_oid("apicount", true)))
		{
			pgstat_report_activity(STATE_RUNNING, what);
			fn(arg);
		}
		else
			ok = false;
		SPI_finish();
		PopActiveSnapshot();
		CommitTransactionCommand();
	}
	PG_CATCH();
	{
		MemoryContextSwitchTo(oldcxt);
		EmitErrorReport();
		FlushErrorState();
		AbortCurrentTransaction();
		ok = false;
	}
	PG_END_TRY();
	MemoryContextSwitchTo(oldcxt);
	pgstat_report_activity(STATE_IDLE, NULL);
	return ok;
}

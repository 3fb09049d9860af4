/*-------------------------------------------------------------------------
 * readlock.c
 *		Share/exclusive lock between query functions and the flush commit.
 *
 * SQL: apicount._read_begin() and apicount._read_end() bracket the query
 * functions' reads (see sql/apicount--0.1.sql).  Lock rules in readlock.h.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "storage/lock.h"

#include "readlock.h"

PG_FUNCTION_INFO_V1(apicount_read_begin);
PG_FUNCTION_INFO_V1(apicount_read_end);

static int	share_depth = 0;
static int	share_nest_level = 0;	/* subtransaction level that took it */
static bool exclusive_held = false;

static void
set_tag(LOCKTAG *tag)
{
	/* field4 = 0xAC keeps it apart from pg_advisory_lock's tags (1 and 2) */
	SET_LOCKTAG_ADVISORY(*tag, MyDatabaseId, 0x61706963, 0x6f756e74, 0xAC);
}

Datum
apicount_read_begin(PG_FUNCTION_ARGS)
{
	LOCKTAG		tag;

	if (share_depth++ == 0)
	{
		set_tag(&tag);
		(void) LockAcquire(&tag, ShareLock, true, false);
		share_nest_level = GetCurrentTransactionNestLevel();
	}
	PG_RETURN_VOID();
}

static void
release_share(void)
{
	LOCKTAG		tag;

	set_tag(&tag);
	LockRelease(&tag, ShareLock, true);
	share_depth = 0;
}

Datum
apicount_read_end(PG_FUNCTION_ARGS)
{
	if (share_depth > 0 && --share_depth == 0)
		release_share();
	PG_RETURN_VOID();
}

/*
 * The worker never queues for the lock: a queued exclusive request would
 * make every new reader wait behind it.  It polls instead, and gives up
 * (the flush fails and is retried) after timeout_ms.
 */
bool
readlock_try_exclusive(int timeout_ms)
{
	LOCKTAG		tag;
	int			waited = 0;

	set_tag(&tag);
	for (;;)
	{
		if (LockAcquire(&tag, ExclusiveLock, true, true) != LOCKACQUIRE_NOT_AVAIL)
		{
			exclusive_held = true;
			return true;
		}
		if (waited >= timeout_ms)
			return false;
		pg_usleep(5 * 1000L);
		waited += 5;
		CHECK_FOR_INTERRUPTS();
	}
}

void
readlock_release_exclusive(void)
{
	LOCKTAG		tag;

	if (!exclusive_held)
		return;
	set_tag(&tag);
	LockRelease(&tag, ExclusiveLock, true);
	exclusive_held = false;
}

static void
readlock_xact_callback(XactEvent event, void *arg)
{
	/* a query function that failed between begin and end */
	if ((event == XACT_EVENT_ABORT || event == XACT_EVENT_COMMIT) &&
		share_depth > 0)
		release_share();
}

/*
 * An error caught by a savepoint or a PL/pgSQL EXCEPTION block aborts the
 * subtransaction in which a query function took the lock: release it there,
 * not at the end of the whole transaction.
 */
static void
readlock_subxact_callback(SubXactEvent event, SubTransactionId mySubid,
						  SubTransactionId parentSubid, void *arg)
{
	if (event == SUBXACT_EVENT_ABORT_SUB && share_depth > 0 &&
		share_nest_level >= GetCurrentTransactionNestLevel())
		release_share();
}

void
readlock_register_callbacks(void)
{
	RegisterXactCallback(readlock_xact_callback, NULL);
	RegisterSubXactCallback(readlock_subxact_callback, NULL);
}

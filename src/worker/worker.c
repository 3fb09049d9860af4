/*-------------------------------------------------------------------------
 * worker.c
 *		The apicount background worker: loop, signals, scheduling.
 *
 * Owns when things happen: a flush every apicount.flush_interval or when
 * apicount.flush() asks, freeing of idle entries after each flush, the
 * retention delete once a minute, and the last flushes at shutdown.
 * SIGTERM only sets a flag, so that the worker can keep flushing while
 * client backends finish their last commits, then exit.  Nothing runs
 * until the extension exists in apicount.database.
 *
 * Lock rule: ApicountShared.mutex (a spinlock) guards the handshake fields
 * and is never held across anything but plain assignments.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "executor/spi.h"
#include "commands/extension.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/proc.h"
#include "utils/backend_status.h"
#include "tcop/tcopprot.h"
#include "utils/guc.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#include "compat.h"
#include "counters.h"
#include "flush.h"
#include "guc.h"
#include "known_rows.h"
#include "sources.h"
#include "worker.h"
#include "worker_txn.h"

#define FLUSH_WAIT_SECS			30
#define RETENTION_EVERY_SECS	60
#define SHUTDOWN_WAIT_SECS		10

static volatile sig_atomic_t got_sigterm = false;

static void
worker_sigterm(SIGNAL_ARGS)
{
	int			save_errno = errno;

	got_sigterm = true;
	SetLatch(MyLatch);
	errno = save_errno;
}

void
apicount_register_worker(void)
{
	BackgroundWorker worker;

	memset(&worker, 0, sizeof(worker));
	worker.bgw_flags = BGWORKER_SHMEM_ACCESS |
		BGWORKER_BACKEND_DATABASE_CONNECTION;
	worker.bgw_start_time = BgWorkerStart_RecoveryFinished;
	worker.bgw_restart_time = 1;
	snprintf(worker.bgw_library_name, BGW_MAXLEN, "apicount");
	snprintf(worker.bgw_function_name, BGW_MAXLEN, "apicount_worker_main");
	snprintf(worker.bgw_name, BGW_MAXLEN, "apicount worker");
	snprintf(worker.bgw_type, BGW_MAXLEN, "apicount worker");
	RegisterBackgroundWorker(&worker);
}

static void
worker_detach(int code, Datum arg)
{
	SpinLockAcquire(&apicount_shared->mutex);
	apicount_shared->worker_pid = 0;
	apicount_shared->worker_latch = NULL;
	SpinLockRelease(&apicount_shared->mutex);
	ConditionVariableBroadcast(&apicount_shared->flush_cv);
}

static bool
extension_exists(void)
{
	bool		exists;

	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	exists = OidIsValid(get_extension_oid("apicount", true));
	CommitTransactionCommand();
	return exists;
}

/* one flush cycle; serves the flush requests made before it started */
static void
run_flush(void)
{
	uint64		serving;
	int64		written = 0;
	bool		ok;
	char		errbuf[256];
	TimestampTz start;
	TimestampTz end;

	SpinLockAcquire(&apicount_shared->mutex);
	serving = apicount_shared->flush_requested;
	SpinLockRelease(&apicount_shared->mutex);

	errbuf[0] = '\0';
	start = GetCurrentTimestamp();
	if (extension_exists())
	{
		pgstat_report_activity(STATE_RUNNING, "apicount flush");
		ok = flush_counters(&written, errbuf, sizeof(errbuf));
		pgstat_report_activity(STATE_IDLE, NULL);
	}
	else
	{
		CounterDelta spill;

		/* DROP EXTENSION drops the data: live counts go with the tables */
		flush_free_entries(true);
		flush_discard_heavy();
		sources_discard();
		counters_take_spill(&spill);
		ok = false;
		snprintf(errbuf, sizeof(errbuf),
				 "extension apicount does not exist in database \"%s\"",
				 apicount_database);
	}
	end = GetCurrentTimestamp();

	if (ok)
	{
		pg_atomic_fetch_add_u64(&apicount_shared->flushes, 1);
		pg_atomic_write_u64(&apicount_shared->last_flush_at, (uint64) end);
		pg_atomic_write_u64(&apicount_shared->last_flush_us,
							(uint64) (end - start));
		flush_free_entries(false);
	}
	else if (extension_exists())
	{
		pg_atomic_fetch_add_u64(&apicount_shared->flush_failures, 1);
		ereport(LOG,
				(errmsg("apicount: flush failed, counts stay in memory and will be retried: %s",
						errbuf)));
	}

	SpinLockAcquire(&apicount_shared->mutex);
	apicount_shared->flush_done = serving;
	apicount_shared->last_flush_ok = ok;
	apicount_shared->last_flush_entries = written;
	strlcpy(apicount_shared->last_error, errbuf,
			sizeof(apicount_shared->last_error));
	SpinLockRelease(&apicount_shared->mutex);
	ConditionVariableBroadcast(&apicount_shared->flush_cv);
}

static bool
flush_requested(void)
{
	bool		pending;

	SpinLockAcquire(&apicount_shared->mutex);
	pending = apicount_shared->flush_requested > apicount_shared->flush_done;
	SpinLockRelease(&apicount_shared->mutex);
	return pending;
}

static void
run_retention(void)
{
	if (extension_exists())
		flush_apply_retention();
}

static void
evaluate_rules(void *arg)
{
	/*
	 * evaluate_rules serializes evaluations with a transaction advisory lock;
	 * the worker only tries it, so that a session holding it (an evaluation
	 * in an open transaction) delays no flush: the next cycle evaluates.
	 */
	if (SPI_execute("SELECT apicount.evaluate_rules() "
					"WHERE pg_try_advisory_xact_lock(1634756963, 1)",
					false, 0) != SPI_OK_SELECT)
		elog(ERROR, "apicount: rule evaluation failed");
}

/* rules are evaluated at least once per slot (see the README) */
static void
run_rules(void)
{
	(void) worker_run_txn("apicount rules", evaluate_rules, NULL);
}

/* client backends still alive (not workers, autovacuum or walsenders) */
static int
count_client_backends(void)
{
	int			n = 0;
	int			i;
	int			total;

	pgstat_clear_backend_activity_snapshot();
	total = pgstat_fetch_stat_numbackends();
	for (i = 1; i <= total; i++)
	{
		LocalPgBackendStatus *local = apicount_local_beentry(i);

		if (local != NULL && local->backendStatus.st_backendType == B_BACKEND &&
			local->backendStatus.st_procpid != MyProcPid)
			n++;
	}
	pgstat_clear_backend_activity_snapshot();
	return n;
}

/*
 * Shutdown: client backends get SIGTERM with us and may still be
 * committing hits.  Flush until they are gone (bounded), then once more.
 */
static void
shutdown_flushes(void)
{
	TimestampTz deadline = TimestampTzPlusMilliseconds(GetCurrentTimestamp(),
													   SHUTDOWN_WAIT_SECS * 1000);
	int			last_clients = -1;
	TimestampTz last_change = GetCurrentTimestamp();

	for (;;)
	{
		int			clients = count_client_backends();
		TimestampTz now;

		run_flush();
		now = GetCurrentTimestamp();
		if (clients != last_clients)
		{
			last_clients = clients;
			last_change = now;
		}

		/*
		 * Stop when the clients are gone, or when their number has not
		 * changed for a second (a SIGTERM sent to the worker alone: the
		 * clients are not leaving), or at the deadline.
		 */
		if (clients == 0 || now > deadline ||
			TimestampDifferenceExceeds(last_change, now, 1000))
			break;
		(void) WaitLatch(MyLatch, WL_TIMEOUT | WL_EXIT_ON_PM_DEATH, 100,
						 PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
	}
	flush_heavy_all = true;
	run_flush();
}

void
apicount_worker_main(Datum main_arg)
{
	TimestampTz next_flush;
	TimestampTz next_retention;
	TimestampTz next_rules;

	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, worker_sigterm);
	BackgroundWorkerUnblockSignals();

	BackgroundWorkerInitializeConnection(apicount_database, NULL, 0);
	pgstat_report_appname("apicount worker");

	/* the worker's statements are fully qualified; pin the path anyway */
	SetConfigOption("search_path", "pg_catalog, pg_temp", PGC_SUSET,
					PGC_S_OVERRIDE);
	SetConfigOption("lock_timeout", "5s", PGC_SUSET, PGC_S_OVERRIDE);
	SetConfigOption("statement_timeout", "60s", PGC_SUSET, PGC_S_OVERRIDE);

	/* before any flush: which caller rows an earlier worker may have written */
	known_rows_start();

	SpinLockAcquire(&apicount_shared->mutex);
	apicount_shared->worker_pid = MyProcPid;
	apicount_shared->worker_latch = MyLatch;
	SpinLockRelease(&apicount_shared->mutex);
	before_shmem_exit(worker_detach, (Datum) 0);

	ereport(LOG,
			(errmsg("apicount worker started in database \"%s\"",
					apicount_database)));

	next_flush = TimestampTzPlusMilliseconds(GetCurrentTimestamp(),
											 apicount_flush_interval_ms);
	next_retention = GetCurrentTimestamp();
	next_rules = GetCurrentTimestamp();

	while (!got_sigterm)
	{
		TimestampTz now = GetCurrentTimestamp();
		long		wait_ms;

		if (ConfigReloadPending)
		{
			TimestampTz sooner;

			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
			/* a shorter flush_interval applies now, not after the old one */
			sooner = TimestampTzPlusMilliseconds(now, apicount_flush_interval_ms);
			if (sooner < next_flush)
				next_flush = sooner;
		}

		if (now >= next_flush || flush_requested())
		{
			run_flush();
			now = GetCurrentTimestamp();
			next_flush = TimestampTzPlusMilliseconds(now,
													 apicount_flush_interval_ms);
		}
		if (now >= next_retention)
		{
			run_retention();
			next_retention = TimestampTzPlusMilliseconds(GetCurrentTimestamp(),
														 RETENTION_EVERY_SECS * 1000);
		}

		if (now >= next_rules)
		{
			/* half a slot apart, so each slot is seen at least once */
			next_rules = TimestampTzPlusMilliseconds(now,
													 apicount_slot_seconds * 500);
			run_rules();
		}

		wait_ms = (long) ((Min(next_flush, next_rules) -
						   GetCurrentTimestamp()) / 1000);
		if (wait_ms < 0)
			wait_ms = 0;
		if (!flush_requested() && !got_sigterm)
		{
			(void) WaitLatch(MyLatch,
							 WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
							 wait_ms, PG_WAIT_EXTENSION);
			ResetLatch(MyLatch);
		}
		CHECK_FOR_INTERRUPTS();
	}

	shutdown_flushes();
	ereport(LOG, (errmsg("apicount worker stopped after its last flush")));

	/*
	 * Exit code 1, not 0: the postmaster unregisters a worker that exits
	 * with 0, so a worker stopped by a stray SIGTERM would never return.
	 * At server shutdown nothing is restarted either way.
	 */
	proc_exit(1);
}

/*
 * Ask the worker for one cycle and wait for it.  Returns false (with
 * *why set) if the worker is not running, stopped, or did not finish in
 * time; *ok and *entries describe the cycle otherwise.
 */
static bool
request_cycle(int timeout_ms, bool *ok, int64 *entries, char *error,
			  const char **why)
{
	ApicountShared *s = apicount_shared;
	uint64		mine;
	TimestampTz deadline;
	bool		served = false;

	SpinLockAcquire(&s->mutex);
	if (s->worker_pid == 0)
	{
		SpinLockRelease(&s->mutex);
		*why = "apicount worker is not running";
		return false;
	}
	mine = ++s->flush_requested;
	if (s->worker_latch)
		SetLatch(s->worker_latch);
	SpinLockRelease(&s->mutex);

	deadline = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), timeout_ms);
	ConditionVariablePrepareToSleep(&s->flush_cv);
	for (;;)
	{
		uint64		done;
		int			pid;

		SpinLockAcquire(&s->mutex);
		done = s->flush_done;
		pid = s->worker_pid;
		*ok = s->last_flush_ok;
		*entries = s->last_flush_entries;
		strlcpy(error, s->last_error, 256);
		SpinLockRelease(&s->mutex);

		if (done >= mine)
		{
			served = true;
			break;
		}
		if (pid == 0)
		{
			*why = "apicount worker stopped before flushing";
			break;
		}
		if (GetCurrentTimestamp() > deadline)
		{
			*why = "apicount flush did not finish in time";
			break;
		}
		ConditionVariableTimedSleep(&s->flush_cv, 100, PG_WAIT_EXTENSION);
	}
	ConditionVariableCancelSleep();
	return served;
}

int64
worker_request_flush(void)
{
	bool		ok = false;
	int64		entries = 0;
	char		error[256];
	const char *why = NULL;

	if (!request_cycle(FLUSH_WAIT_SECS * 1000, &ok, &entries, error, &why))
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("%s", why),
				 errhint("Counts stay in shared memory. The postmaster restarts a stopped worker within seconds; a flush that does not finish may be blocked by a lock on the rollup tables.")));
	if (!ok)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("apicount flush failed"),
				 errdetail("%s", error),
				 errhint("Counts stay in shared memory and the worker retries.")));
	return entries;
}

/*
 * CREATE EXTENSION starts from empty counters.  While the creating
 * transaction is open the worker does not see the extension, and a cycle
 * of the worker without the extension discards what a dropped earlier
 * installation left in shared memory.  Best effort: waits for the worker
 * (which may be starting) for a few seconds at most.
 */
void
worker_discard_stale(void)
{
	bool		ok;
	int64		entries;
	char		error[256];
	const char *why;
	int			i;

	for (i = 0; i < 100; i++)
	{
		if (request_cycle(5000, &ok, &entries, error, &why))
			return;
		if (strcmp(why, "apicount worker is not running") != 0)
			return;
		pg_usleep(100 * 1000L);
		CHECK_FOR_INTERRUPTS();
	}
}

/*-------------------------------------------------------------------------
 * flush.c
 *		The flush cycle: snapshot -> parameterized writes -> subtract.
 *
 * Owns the cycle and what its steps share.  A flush copies every entry's
 * unflushed deltas (under shared partition locks, so ingest never waits)
 * and the latency pages, writes them in one transaction (arrays bound as
 * parameters, never interpolated): the API rows (flush_api.c), the caller
 * rows (flush_callers.c), the summaries of heavy callers of the minutes
 * past the live horizon (flush_heavy.c), the 'audited_apis_full' alert
 * when audited callers were folded, and the shipped positions the deltas
 * cover (sources.h).  After the commit it subtracts exactly what it wrote,
 * so hits that arrived meanwhile stay, and retires the written summaries.
 * A failed flush subtracts nothing and is retried by the next cycle.
 * Until ALTER EXTENSION apicount UPDATE, an installed 0.1 schema gets the
 * 0.1 columns and no summaries.  Also here: freeing entries that left the
 * live horizon.
 *
 * Lock rules: the read lock (readlock.h) is taken exclusively around the
 * commit and the subtraction; entry and page pointers kept between the
 * snapshot and the subtraction stay valid because only this worker removes
 * entries and pages.
 * Memory: the snapshot and everything the writes allocate live in
 * FlushContext, reset every cycle.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "commands/extension.h"
#include "executor/spi.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#include "counters.h"
#include "entry_table.h"
#include "flush.h"
#include "guc.h"
#include "known_rows.h"
#include "latency_store.h"
#include "readlock.h"
#include "sources.h"
#include "strtab.h"

static MemoryContext FlushContext = NULL;

/* how long a flush waits for query functions in progress before retrying */
#define READLOCK_WAIT_MS	5000

/* whether apicount.<name> exists (tables added by later versions) */
bool
flush_table_exists(const char *name)
{
	char		sql[256];

	snprintf(sql, sizeof(sql),
			 "SELECT pg_catalog.to_regclass('apicount.%s') IS NOT NULL", name);
	if (SPI_execute(sql, true, 1) != SPI_OK_SELECT || SPI_processed != 1)
		elog(ERROR, "apicount: reading the catalog failed");
	{
		bool		isnull;

		return DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0],
										  SPI_tuptable->tupdesc, 1, &isnull));
	}
}

/* 1 when the installed extension has the 0.2 schema (set by each flush) */
int			flush_schema_v2 = 1;

static int
installed_schema_v2(void)
{
	if (SPI_execute("SELECT extversion OPERATOR(pg_catalog.=) '0.1' "
					"FROM pg_catalog.pg_extension WHERE extname OPERATOR(pg_catalog.=) 'apicount'",
					true, 1) != SPI_OK_SELECT || SPI_processed != 1)
		elog(ERROR, "apicount: reading the installed version failed");
	{
		bool		isnull;
		bool		v1 = DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0],
												   SPI_tuptable->tupdesc, 1, &isnull));

		return v1 ? 0 : 1;
	}
}

/*
 * An alert when callers of audited APIs were folded since the last one
 * (their audited tier was full): a row in apicount.alerts and a NOTIFY,
 * as apicount.evaluate_rules() fires them.
 */
static const char *audited_alert_sql =
"WITH a AS (INSERT INTO apicount.alerts "
" (fired_at, rule, calls, errors, window_start, window_end) "
" VALUES (pg_catalog.now(), 'audited_apis_full', $1, 0, $2, pg_catalog.now()) "
" RETURNING *) "
"SELECT pg_catalog.pg_notify('apicount_alert', pg_catalog.row_to_json(a)::text) FROM a";

static TimestampTz audited_alerted_at = 0;

/* fire the alert if needed; returns the folded count it covers */
static uint64
alert_audited_folded(void)
{
	uint64		folded = pg_atomic_read_u64(&apicount_shared->audited_folded);
	uint64		alerted = pg_atomic_read_u64(&apicount_shared->audited_alerted);
	Datum		args[2];
	Oid			types[2] = {INT8OID, TIMESTAMPTZOID};

	if (folded <= alerted)
		return alerted;
	args[0] = Int64GetDatum((int64) (folded - alerted));
	args[1] = TimestampTzGetDatum(audited_alerted_at != 0 ? audited_alerted_at :
								  GetCurrentTimestamp());
	if (SPI_execute_with_args(audited_alert_sql, 2, types, args, NULL, false, 0)
		!= SPI_OK_SELECT)
		elog(ERROR, "apicount: inserting the audited_apis_full alert failed");
	return folded;
}

static void
ensure_context(void)
{
	if (FlushContext == NULL)
		FlushContext = AllocSetContextCreate(TopMemoryContext,
											 "apicount flush",
											 ALLOCSET_DEFAULT_SIZES);
}

/* copy the unflushed deltas of every entry (shared locks only) */
static FlushItem *
take_snapshot(int *nitems)
{
	int			cap = 1024;
	int			n = 0;
	FlushItem  *items = MemoryContextAllocHuge(FlushContext,
											   cap * sizeof(FlushItem));
	uint32		cursor;
	CounterEntry *e;
	CounterDelta spill;

	counters_lock_all(LW_SHARED);
	cursor = 0;
	while ((e = etab_next(&cursor)) != NULL)
	{
		CounterDelta d;
		CounterOther o;

		counters_read_delta(e, &d);
		memset(&o, 0, sizeof(o));
		if (e->key.flags & KEY_API)
			counters_read_other(e, &o);
		if (delta_is_zero(&d) && o.calls == 0)
			continue;
		if (n == cap)
		{
			cap *= 2;
			items = repalloc_huge(items, cap * sizeof(FlushItem));
		}
		items[n].entry = e;
		items[n].key = e->key;
		items[n].d = d;
		items[n].o = o;
		ItemPointerSetInvalid(&items[n].tid);
		n++;
	}
	counters_unlock_all();

	/*
	 * Hits that found no room at all are written under the catch-all API
	 * of the current minute, now, and all of them as its "(other callers)".
	 */
	counters_take_spill(&spill);
	if (!delta_is_zero(&spill))
	{
		if (n == cap)
			items = repalloc_huge(items, (cap + 1) * sizeof(FlushItem));
		memset(&items[n], 0, sizeof(FlushItem));
		items[n].entry = NULL;
		counters_catchall_key(apicount_minute_of(GetCurrentTimestamp()),
							  &items[n].key);
		items[n].d = spill;
		items[n].o.calls = spill.calls;
		items[n].o.ok = spill.ok;
		items[n].o.client_errors = spill.client_errors;
		items[n].o.server_errors = spill.server_errors;
		ItemPointerSetInvalid(&items[n].tid);
		n++;
	}
	*nitems = n;
	return items;
}

Datum
flush_string_datum(uint64 h)
{
	text	   *t = strtab_get_text(h);

	if (t == NULL)
		elog(ERROR, "apicount: string %016llx missing from the string table",
			 (unsigned long long) h);
	return PointerGetDatum(t);
}

/*
 * Copy the latency pages.  A page whose strings left the string table
 * (its API's counter entries were freed meanwhile) is written under the
 * overflow API, like hits that found no counter entry.
 */
static LatSnap *
take_latency_snapshot(int *n)
{
	LatSnap    *snap = latstore_snapshot(PG_INT32_MIN, PG_INT32_MAX, n);
	int			i;

	for (i = 0; i < *n; i++)
	{
		char		c;

		if (strtab_get(snap[i].key.method_h, &c, 1) < 0 ||
			strtab_get(snap[i].key.path_h, &c, 1) < 0)
		{
			snap[i].key.method_h = apicount_any_method_h;
			snap[i].key.path_h = apicount_other_path_h;
		}
	}
	return snap;
}


bool
flush_counters(int64 *written, char *errbuf, int errlen)
{
	HeavyDue	due;
	CallerWrites caller_writes;
	volatile uint64 audited_done = 0;
	FlushItem  *items;
	int			nitems;
	LatSnap    *lat;
	int			nlat;
	MemoryContext oldcxt;
	volatile bool committed = false;
	volatile bool ok = true;

	ensure_context();
	MemoryContextReset(FlushContext);
	oldcxt = MemoryContextSwitchTo(FlushContext);
	sources_snapshot_begin();	/* shipped positions with their hits */
	items = take_snapshot(&nitems);
	lat = take_latency_snapshot(&nlat);
	sources_snapshot_end();
	flush_heavy_take(&due);
	MemoryContextSwitchTo(oldcxt);
	*written = 0;
	memset(&caller_writes, 0, sizeof(caller_writes));

	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	PG_TRY();
	{
		SPI_connect();
		PushActiveSnapshot(GetTransactionSnapshot());
		if (!OidIsValid(get_extension_oid("apicount", true)))
			ereport(ERROR,
					(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
					 errmsg("extension apicount does not exist in database \"%s\"",
							apicount_database)));
		flush_schema_v2 = installed_schema_v2();
		if (nitems > 0 || nlat > 0)
		{
			flush_api_rows(items, nitems, lat, nlat, TIER_MINUTE);
			flush_api_rows(items, nitems, lat, nlat, TIER_HOUR);
			if (flush_table_exists("api_day"))	/* from 0.4 on */
			{
				flush_api_rows(items, nitems, lat, nlat, TIER_DAY);
				flush_api_rows(items, nitems, lat, nlat, TIER_TOTAL_MINUTE);
				flush_api_rows(items, nitems, lat, nlat, TIER_TOTAL_HOUR);
				flush_api_rows(items, nitems, lat, nlat, TIER_TOTAL_DAY);
			}
			flush_caller_rows(items, nitems, &caller_writes);
		}
		if (flush_schema_v2)
			flush_heavy_write(&due);	/* 0.1 has no tables for them: retired unwritten */
		audited_done = alert_audited_folded();
		sources_write_snapshot();
		SPI_finish();
		PopActiveSnapshot();

		if (!readlock_try_exclusive(READLOCK_WAIT_MS))
			ereport(ERROR,
					(errcode(ERRCODE_LOCK_NOT_AVAILABLE),
					 errmsg("apicount flush gave up waiting %d ms for running queries to finish",
							READLOCK_WAIT_MS),
					 errdetail("A session holds the read lock of the query functions (apicount._read_begin) for a long time.")));
		CommitTransactionCommand();
		committed = true;
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		MemoryContextSwitchTo(FlushContext);
		edata = CopyErrorData();
		FlushErrorState();
		AbortCurrentTransaction();
		readlock_release_exclusive();
		strlcpy(errbuf, edata->message ? edata->message : "unknown error",
				errlen);
		ok = false;
	}
	PG_END_TRY();

	if (committed)
	{
		int			i;

		for (i = 0; i < nitems; i++)
		{
			if (items[i].entry == NULL)
				continue;
			counters_subtract(items[i].entry, &items[i].d,
							  is_api_item(&items[i]) ? &items[i].o : NULL);
			if (!is_api_item(&items[i]) &&
				(items[i].key.flags & KEY_TRACKED) && items[i].d.calls != 0)
				known_rows_written(items[i].entry, &items[i].tid);
		}
		latstore_subtract(lat, nlat);
		flush_heavy_retire(&due);
		sources_flushed();
		readlock_release_exclusive();
		if (audited_done > pg_atomic_read_u64(&apicount_shared->audited_alerted))
		{
			pg_atomic_write_u64(&apicount_shared->audited_alerted, audited_done);
			audited_alerted_at = GetCurrentTimestamp();
		}
		pg_atomic_fetch_add_u64(&apicount_shared->caller_rows_inserted,
								caller_writes.inserted);
		pg_atomic_fetch_add_u64(&apicount_shared->caller_rows_updated,
								caller_writes.updated);
		pg_atomic_fetch_add_u64(&apicount_shared->caller_rows_upserted,
								caller_writes.upserted);
		*written = nitems;
	}
	else
	{
		/* give the spill back: the next flush writes it */
		if (nitems > 0 && items[nitems - 1].entry == NULL)
			counters_return_spill(&items[nitems - 1].d);
	}
	MemoryContextSwitchTo(oldcxt);
	return ok;
}

void
flush_free_entries(bool discard)
{
	TimestampTz now = GetCurrentTimestamp();
	int32		cutoff;
	int			cap = 1024,
				n = 0,
				i;
	CounterEntry **cand;
	uint32		cursor;
	CounterEntry *e;

	ensure_context();
	/* entries whose minute ended before the horizon (plus one slot) */
	cutoff = apicount_minute_of(now - (LIVE_HORIZON_SECS +
									   apicount_slot_seconds) * USECS_PER_SEC) - 1;
	cand = MemoryContextAllocHuge(FlushContext, cap * sizeof(CounterEntry *));

	counters_lock_all(LW_SHARED);
	cursor = 0;
	while ((e = etab_next(&cursor)) != NULL)
	{
		if (!discard &&
			(e->key.minute > cutoff ||
			 pg_atomic_read_u64(&entry_tail(e)->calls) != 0 ||
			 pg_atomic_read_u32(&e->lat_count) != 0))
			continue;
		if (n == cap)
		{
			cap *= 2;
			cand = repalloc_huge(cand, cap * sizeof(CounterEntry *));
		}
		cand[n++] = e;
	}
	counters_unlock_all();

	for (i = 0; i < n; i++)
	{
		int32		minute = cand[i]->key.minute;

		if (counters_remove(cand[i], !discard))
			known_rows_removed(cand[i], minute);
	}
	pfree(cand);

	/* emptied latency pages */
	latstore_free_pages(discard);
}

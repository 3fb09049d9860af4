/*-------------------------------------------------------------------------
 * flush.c
 *		Snapshot -> parameterized writes -> subtract flushed deltas.
 *
 * Owns the worker's writes.  A flush copies every entry's unflushed
 * deltas (under shared partition locks, so ingest never waits), writes
 * them in one transaction (arrays bound as parameters, never
 * interpolated): from the API entries one upsert each into api_minute,
 * api_hour, api_day and their sums over all APIs api_total_minute, _hour
 * and _day (0.4), and each API's "(other callers)" row, from the caller entries
 * the caller_minute rows each the cheapest safe way (known_rows.h: an
 * update at a known TID, a plain insert, or the upsert).  The same
 * transaction writes the summaries of heavy callers of the minutes past
 * the live horizon (heavy.h) and, when audited callers were folded, the
 * 'audited_apis_full' alert.  After the commit it subtracts exactly what
 * it wrote, so hits that arrived meanwhile stay, and retires the written
 * summaries.  A failed flush subtracts nothing and is retried by the next
 * cycle.  Until ALTER EXTENSION apicount UPDATE, an installed 0.1 schema
 * gets the 0.1 columns and no summaries.
 *
 * Latency histograms follow the same cycle: the pages of the latency store
 * are copied after the counters, merged per API row into the latency_hist
 * column (apicount._latency_hist_add on conflict) and subtracted after the
 * commit.
 *
 * Lock rules: the read lock (readlock.h) is taken exclusively around the
 * commit and the subtraction; entry and page pointers kept between the
 * snapshot and the subtraction stay valid because only this worker removes
 * entries and pages.
 * Memory: the snapshot lives in FlushContext, reset every cycle.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "commands/extension.h"
#include "executor/spi.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#include "counters.h"
#include "entry_table.h"
#include "flush.h"
#include "guc.h"
#include "heavy.h"
#include "known_rows.h"
#include "latency_sql.h"
#include "latency_store.h"
#include "readlock.h"
#include "sources.h"
#include "strtab.h"
#include "worker_txn.h"

typedef struct FlushItem
{
	CounterEntry *entry;		/* NULL for the spill counters */
	CounterKey	key;
	CounterDelta d;
	CounterOther o;				/* API items: the "(other callers)" counts */
	ItemPointerData tid;		/* where the flush wrote the caller row */
} FlushItem;

typedef struct ApiRowKey
{
	int32		minute;
	uint64		method_h;
	uint64		path_h;
} ApiRowKey;

typedef struct ApiRow
{
	ApiRowKey	key;
	CounterDelta d;
	LatPageList lat;			/* latency pages of this row */
} ApiRow;

static MemoryContext FlushContext = NULL;

/* caller rows written by each statement in the current flush */
typedef struct CallerWrites
{
	int64		inserted;
	int64		updated;
	int64		upserted;
} CallerWrites;

static CallerWrites caller_writes;

/* how long a flush waits for query functions in progress before retrying */
#define READLOCK_WAIT_MS	5000

/*
 * The statements take one array per column and unnest them in the select
 * list: a ProjectSet streams the rows, where a function scan in FROM would
 * first copy them all into a tuplestore (spilled to disk past work_mem).
 */

/* %s: api_minute or api_hour (same columns, same key) */
static const char *api_upsert_sql =
"INSERT INTO apicount.%s AS t "
"(bucket, method, path, calls, ok, client_errors, server_errors, "
" latency_sum_ms, latency_max_ms, latency_count, latency_hist) "
"SELECT pg_catalog.unnest($1::pg_catalog.timestamptz[]), "
" pg_catalog.unnest($2::pg_catalog.text[]), pg_catalog.unnest($3::pg_catalog.text[]), "
" pg_catalog.unnest($4::pg_catalog.int8[]), pg_catalog.unnest($5::pg_catalog.int8[]), "
" pg_catalog.unnest($6::pg_catalog.int8[]), pg_catalog.unnest($7::pg_catalog.int8[]), "
" pg_catalog.unnest($8::pg_catalog.float8[]), pg_catalog.unnest($9::pg_catalog.float8[]), "
" pg_catalog.unnest($10::pg_catalog.int8[]), pg_catalog.unnest($11::pg_catalog.bytea[]) "
"ON CONFLICT (bucket, method, path) DO UPDATE SET "
" calls = t.calls OPERATOR(pg_catalog.+) excluded.calls, "
" ok = t.ok OPERATOR(pg_catalog.+) excluded.ok, "
" client_errors = t.client_errors OPERATOR(pg_catalog.+) excluded.client_errors, "
" server_errors = t.server_errors OPERATOR(pg_catalog.+) excluded.server_errors, "
" latency_sum_ms = t.latency_sum_ms OPERATOR(pg_catalog.+) excluded.latency_sum_ms, "
" latency_max_ms = GREATEST(t.latency_max_ms, excluded.latency_max_ms), "
" latency_count = t.latency_count OPERATOR(pg_catalog.+) excluded.latency_count, "
" latency_hist = CASE WHEN excluded.latency_hist IS NULL THEN t.latency_hist "
"  ELSE apicount._latency_hist_add(t.latency_hist, excluded.latency_hist) END";

/*
 * caller_minute's columns, $1 .. $9, and from extension version 0.2 on
 * folded_before as $10.  A server whose library is newer than the
 * installed extension (before ALTER EXTENSION apicount UPDATE) writes the
 * 0.1 columns.
 */
#define CALLER_COLUMNS_V1 \
"bucket, method, path, client_ip, user_id, calls, ok, client_errors, server_errors"
#define CALLER_UNNEST_V1 \
"pg_catalog.unnest($1::pg_catalog.timestamptz[]), " \
"pg_catalog.unnest($2::pg_catalog.text[]), pg_catalog.unnest($3::pg_catalog.text[]), " \
"pg_catalog.unnest($4::pg_catalog.inet[]), pg_catalog.unnest($5::pg_catalog.text[]), " \
"pg_catalog.unnest($6::pg_catalog.int8[]), pg_catalog.unnest($7::pg_catalog.int8[]), " \
"pg_catalog.unnest($8::pg_catalog.int8[]), pg_catalog.unnest($9::pg_catalog.int8[])"
#define CALLER_COLUMNS CALLER_COLUMNS_V1 ", folded_before"
#define CALLER_UNNEST CALLER_UNNEST_V1 ", pg_catalog.unnest($10::pg_catalog.bool[])"

#define CALLER_ADD(src) \
" calls = t.calls OPERATOR(pg_catalog.+) " src ".calls, " \
" ok = t.ok OPERATOR(pg_catalog.+) " src ".ok, " \
" client_errors = t.client_errors OPERATOR(pg_catalog.+) " src ".client_errors, " \
" server_errors = t.server_errors OPERATOR(pg_catalog.+) " src ".server_errors "

/* the upsert, the plain insert, the update by TID: [0] for 0.1, [1] from 0.2 */
static const char *caller_upsert_sql[2] = {
	"INSERT INTO apicount.caller_minute AS t (" CALLER_COLUMNS_V1 ") "
	"SELECT " CALLER_UNNEST_V1 " "
	"ON CONFLICT (bucket, method, path, client_ip, user_id) DO UPDATE SET "
	CALLER_ADD("excluded") "RETURNING t.ctid",
	"INSERT INTO apicount.caller_minute AS t (" CALLER_COLUMNS ") "
	"SELECT " CALLER_UNNEST " "
	"ON CONFLICT (bucket, method, path, client_ip, user_id) DO UPDATE SET "
	CALLER_ADD("excluded") ", folded_before = t.folded_before OR excluded.folded_before "
	"RETURNING t.ctid"
};

/* rows that are not there yet (known_rows.h): no conflict handling */
static const char *caller_insert_sql[2] = {
	"INSERT INTO apicount.caller_minute (" CALLER_COLUMNS_V1 ") "
	"SELECT " CALLER_UNNEST_V1 " RETURNING ctid",
	"INSERT INTO apicount.caller_minute (" CALLER_COLUMNS ") "
	"SELECT " CALLER_UNNEST " RETURNING ctid"
};

/*
 * Rows this worker wrote before, by the TID it got back (the parameter
 * after the columns; the next one numbers the rows): only where the TID
 * still holds the row's key.  RETURNING tells which rows were found.
 */
#define CALLER_UPDATE_WHERE \
"WHERE t.ctid OPERATOR(pg_catalog.=) u.tid " \
" AND t.bucket OPERATOR(pg_catalog.=) u.bucket " \
" AND t.method OPERATOR(pg_catalog.=) u.method " \
" AND t.path OPERATOR(pg_catalog.=) u.path " \
" AND (t.client_ip OPERATOR(pg_catalog.=) u.client_ip " \
"      OR (t.client_ip IS NULL AND u.client_ip IS NULL)) " \
" AND (t.user_id OPERATOR(pg_catalog.=) u.user_id " \
"      OR (t.user_id IS NULL AND u.user_id IS NULL)) " \
"RETURNING u.ord, t.ctid"

static const char *caller_update_sql[2] = {
	"UPDATE apicount.caller_minute AS t SET " CALLER_ADD("u")
	"FROM (SELECT " CALLER_UNNEST_V1 ", pg_catalog.unnest($10::pg_catalog.tid[]), "
	"       pg_catalog.unnest($11::pg_catalog.int4[])) "
	" AS u(" CALLER_COLUMNS_V1 ", tid, ord) " CALLER_UPDATE_WHERE,
	"UPDATE apicount.caller_minute AS t SET " CALLER_ADD("u")
	", folded_before = t.folded_before OR u.folded_before "
	"FROM (SELECT " CALLER_UNNEST ", pg_catalog.unnest($11::pg_catalog.tid[]), "
	"       pg_catalog.unnest($12::pg_catalog.int4[])) "
	" AS u(" CALLER_COLUMNS ", tid, ord) " CALLER_UPDATE_WHERE
};

/* whether apicount.<name> exists (tables added by later versions) */
static bool
table_exists(const char *name)
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
static int	schema_v2 = 1;

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
 * The summaries of heavy callers of one minute and dimension (heavy.h):
 * one row per counter, and the minute's bound for callers absent from it.
 *
 * A summary written at shutdown may meet its minute again after the
 * restart.  The two are merged as mergeable summaries are (Agarwal et al.,
 * "Mergeable Summaries", PODS 2012): a key's count is the sum of its counts,
 * a summary that lacks the key counting its bound for absent keys.  So the
 * rows of the earlier summary that the new one lacks gain the new bound
 * ($10), the new rows the earlier one lacked gain the earlier bound ($11),
 * and the bounds add up.  $10 = $11 = 0 when the minute was not written yet.
 */
static const char *heavy_prev_bound_sql =
"SELECT absent_bound FROM apicount.heavy_minute_bounds "
"WHERE bucket OPERATOR(pg_catalog.=) $1 AND grouped_by OPERATOR(pg_catalog.=) $2";

static const char *heavy_age_rows_sql =
"UPDATE apicount.caller_heavy_minute AS t SET "
" calls = t.calls OPERATOR(pg_catalog.+) $10, "
" calls_error = t.calls_error OPERATOR(pg_catalog.+) $10 "
"WHERE t.bucket OPERATOR(pg_catalog.=) $1 AND t.grouped_by OPERATOR(pg_catalog.=) $2 "
"AND NOT EXISTS (SELECT 1 FROM ROWS FROM (pg_catalog.unnest($3::pg_catalog.text[]), "
" pg_catalog.unnest($4::pg_catalog.text[]), pg_catalog.unnest($5::pg_catalog.inet[]), "
" pg_catalog.unnest($6::pg_catalog.text[])) AS n(m, p, ip, u) "
" WHERE n.m OPERATOR(pg_catalog.=) t.method AND n.p OPERATOR(pg_catalog.=) t.path "
" AND n.ip IS NOT DISTINCT FROM t.client_ip AND n.u IS NOT DISTINCT FROM t.user_id)";

static const char *heavy_rows_sql =
"INSERT INTO apicount.caller_heavy_minute AS t "
"(bucket, grouped_by, method, path, client_ip, user_id, calls, calls_error, errors) "
"SELECT $1, $2, n.m, n.p, n.ip, n.u, n.c OPERATOR(pg_catalog.+) $11, "
" n.e OPERATOR(pg_catalog.+) $11, n.x "
"FROM ROWS FROM (pg_catalog.unnest($3::pg_catalog.text[]), "
" pg_catalog.unnest($4::pg_catalog.text[]), pg_catalog.unnest($5::pg_catalog.inet[]), "
" pg_catalog.unnest($6::pg_catalog.text[]), pg_catalog.unnest($7::pg_catalog.int8[]), "
" pg_catalog.unnest($8::pg_catalog.int8[]), pg_catalog.unnest($9::pg_catalog.int8[])) "
" AS n(m, p, ip, u, c, e, x) "
"ON CONFLICT (bucket, grouped_by, method, path, client_ip, user_id) DO UPDATE SET "
" calls = t.calls OPERATOR(pg_catalog.+) excluded.calls OPERATOR(pg_catalog.-) $11, "
" calls_error = t.calls_error OPERATOR(pg_catalog.+) excluded.calls_error "
"   OPERATOR(pg_catalog.-) $11, "
" errors = t.errors OPERATOR(pg_catalog.+) excluded.errors";

static const char *heavy_bound_sql =
"INSERT INTO apicount.heavy_minute_bounds AS t "
"(bucket, grouped_by, folded_calls, absent_bound) VALUES ($1, $2, $3, $4) "
"ON CONFLICT (bucket, grouped_by) DO UPDATE SET "
" folded_calls = t.folded_calls OPERATOR(pg_catalog.+) excluded.folded_calls, "
" absent_bound = t.absent_bound OPERATOR(pg_catalog.+) excluded.absent_bound";

/* set for the last flush at shutdown: write every summary of heavy callers */
bool		flush_heavy_all = false;

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

static bool
delta_is_zero(const CounterDelta *d)
{
	return d->calls == 0 && d->lat_count == 0;
}

static inline bool
is_api_item(const FlushItem *it)
{
	return (it->key.flags & KEY_API) != 0;
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

static Datum
string_datum(uint64 h)
{
	text	   *t = strtab_get_text(h);

	if (t == NULL)
		elog(ERROR, "apicount: string %016llx missing from the string table",
			 (unsigned long long) h);
	return PointerGetDatum(t);
}

static Datum
make_array(Datum *values, bool *nulls, int n, Oid type)
{
	int			dims[1] = {n};
	int			lbs[1] = {1};
	int16		typlen;
	bool		typbyval;
	char		typalign;

	get_typlenbyvalalign(type, &typlen, &typbyval, &typalign);
	return PointerGetDatum(construct_md_array(values, nulls, 1, dims, lbs,
											  type, typlen, typbyval,
											  typalign));
}

static inline Datum
ms_datum(uint64 ns)
{
	return Float8GetDatum((double) ns / 1000000.0);
}

/* the API rollup tiers: bucket width in minutes, table */
typedef enum ApiTier
{
	TIER_MINUTE,
	TIER_HOUR,
	TIER_DAY,
	/* all APIs per minute, hour and day (api_total_*, 0.4) */
	TIER_TOTAL_MINUTE,
	TIER_TOTAL_HOUR,
	TIER_TOTAL_DAY
} ApiTier;

#define IS_TOTAL(tier)	((tier) >= TIER_TOTAL_MINUTE)

static const int tier_minutes[] = {1, 60, 1440, 1, 60, 1440};
static const char *const tier_table[] = {"api_minute", "api_hour", "api_day",
"api_total_minute", "api_total_hour", "api_total_day"};

/* %s: api_total_*; api_upsert_sql's columns without method and path */
static const char *total_upsert_sql =
"INSERT INTO apicount.%s AS t "
"(bucket, calls, ok, client_errors, server_errors, "
" latency_sum_ms, latency_max_ms, latency_count, latency_hist) "
"SELECT pg_catalog.unnest($1::pg_catalog.timestamptz[]), "
" pg_catalog.unnest($2::pg_catalog.int8[]), pg_catalog.unnest($3::pg_catalog.int8[]), "
" pg_catalog.unnest($4::pg_catalog.int8[]), pg_catalog.unnest($5::pg_catalog.int8[]), "
" pg_catalog.unnest($6::pg_catalog.float8[]), pg_catalog.unnest($7::pg_catalog.float8[]), "
" pg_catalog.unnest($8::pg_catalog.int8[]), pg_catalog.unnest($9::pg_catalog.bytea[]) "
"ON CONFLICT (bucket) DO UPDATE SET "
" calls = t.calls OPERATOR(pg_catalog.+) excluded.calls, "
" ok = t.ok OPERATOR(pg_catalog.+) excluded.ok, "
" client_errors = t.client_errors OPERATOR(pg_catalog.+) excluded.client_errors, "
" server_errors = t.server_errors OPERATOR(pg_catalog.+) excluded.server_errors, "
" latency_sum_ms = t.latency_sum_ms OPERATOR(pg_catalog.+) excluded.latency_sum_ms, "
" latency_max_ms = GREATEST(t.latency_max_ms, excluded.latency_max_ms), "
" latency_count = t.latency_count OPERATOR(pg_catalog.+) excluded.latency_count, "
" latency_hist = CASE WHEN excluded.latency_hist IS NULL THEN t.latency_hist "
"  ELSE apicount._latency_hist_add(t.latency_hist, excluded.latency_hist) END";

/* the row of (minute, hour or day, method, path), created empty if new */
static ApiRow *
api_row(HTAB *rows, int32 minute, uint64 method_h, uint64 path_h, ApiTier tier)
{
	ApiRowKey	k;
	ApiRow	   *row;
	bool		found;
	int32		w = tier_minutes[tier];

	memset(&k, 0, sizeof(k));
	/* UTC hours and days start at multiples of 60 and 1440 epoch minutes */
	k.minute = minute - ((minute % w) + w) % w;
	k.method_h = method_h;
	k.path_h = path_h;
	row = hash_search(rows, &k, HASH_ENTER, &found);
	if (!found)
	{
		memset(&row->d, 0, sizeof(CounterDelta));
		memset(&row->lat, 0, sizeof(LatPageList));
	}
	return row;
}

/*
 * Upsert API-level rows: per minute into api_minute, per hour into
 * api_hour or per UTC day into api_day (the coarser rollups that long
 * ranges read; all are written by the same flush transaction, so they
 * always agree, late hits included).  Latency pages with no counter item
 * in this flush still make a row (with zero counts).
 */
static void
upsert_api_rows(FlushItem *items, int nitems, LatSnap *lat, int nlat,
				ApiTier tier)
{
	HASHCTL		ctl;
	HTAB	   *rows;
	HASH_SEQ_STATUS seq;
	ApiRow	   *row;
	int			n,
				i;
	Datum	   *cols[11];
	bool	   *maxnulls;
	bool	   *histnulls;
	uint64	   *dense;
	Oid			types[11] = {TIMESTAMPTZOID, TEXTOID, TEXTOID, INT8OID, INT8OID,
		INT8OID, INT8OID, FLOAT8OID, FLOAT8OID, INT8OID, BYTEAOID};
	Datum		args[11];

	memset(&ctl, 0, sizeof(ctl));
	ctl.keysize = sizeof(ApiRowKey);
	ctl.entrysize = sizeof(ApiRow);
	ctl.hcxt = CurrentMemoryContext;
	rows = hash_create("apicount api rows", Max(nitems, 16), &ctl,
					   HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
	for (i = 0; i < nitems; i++)
	{
		if (!is_api_item(&items[i]) || delta_is_zero(&items[i].d))
			continue;
		row = api_row(rows, items[i].key.minute,
					  IS_TOTAL(tier) ? 0 : items[i].key.method_h,
					  IS_TOTAL(tier) ? 0 : items[i].key.path_h, tier);
		row->d.calls += items[i].d.calls;
		row->d.ok += items[i].d.ok;
		row->d.client_errors += items[i].d.client_errors;
		row->d.server_errors += items[i].d.server_errors;
		row->d.lat_count += items[i].d.lat_count;
		row->d.lat_sum_ns += items[i].d.lat_sum_ns;
		row->d.lat_max_ns = Max(row->d.lat_max_ns, items[i].d.lat_max_ns);
	}
	for (i = 0; i < nlat; i++)
	{
		row = api_row(rows, lat[i].key.minute,
					  IS_TOTAL(tier) ? 0 : lat[i].key.method_h,
					  IS_TOTAL(tier) ? 0 : lat[i].key.path_h, tier);
		lat_pages_append(&row->lat, i);
	}

	n = hash_get_num_entries(rows);
	if (n == 0)
		return;
	for (i = 0; i < 11; i++)
		cols[i] = palloc(sizeof(Datum) * n);
	maxnulls = palloc0(sizeof(bool) * n);
	histnulls = palloc0(sizeof(bool) * n);
	dense = palloc0(sizeof(uint64) * LAT_NBUCKETS);
	i = 0;
	hash_seq_init(&seq, rows);
	while ((row = hash_seq_search(&seq)) != NULL)
	{
		cols[0][i] = TimestampTzGetDatum((TimestampTz) row->key.minute * USECS_PER_MINUTE);
		cols[1][i] = IS_TOTAL(tier) ? (Datum) 0 : string_datum(row->key.method_h);
		cols[2][i] = IS_TOTAL(tier) ? (Datum) 0 : string_datum(row->key.path_h);
		cols[3][i] = Int64GetDatum(row->d.calls);
		cols[4][i] = Int64GetDatum(row->d.ok);
		cols[5][i] = Int64GetDatum(row->d.client_errors);
		cols[6][i] = Int64GetDatum(row->d.server_errors);
		cols[7][i] = ms_datum(row->d.lat_sum_ns);
		cols[8][i] = ms_datum(row->d.lat_max_ns);
		maxnulls[i] = row->d.lat_count == 0;
		cols[9][i] = Int64GetDatum(row->d.lat_count);
		histnulls[i] = row->lat.n == 0;
		cols[10][i] = histnulls[i] ? (Datum) 0 :
			PointerGetDatum(lat_pages_to_bytea(lat, &row->lat, dense));
		i++;
	}
	for (i = 0; i < 11; i++)
	{
		Oid			elemtype = types[i];

		if (IS_TOTAL(tier) && (i == 1 || i == 2))
			continue;
		args[i] = make_array(cols[i],
							 i == 8 ? maxnulls : i == 10 ? histnulls : NULL,
							 n, elemtype);
		types[i] = get_array_type(elemtype);
	}
	{
		char		sql[2048];

		if (IS_TOTAL(tier))
		{
			/* the columns but method and path */
			memmove(&args[1], &args[3], sizeof(Datum) * 8);
			memmove(&types[1], &types[3], sizeof(Oid) * 8);
			snprintf(sql, sizeof(sql), total_upsert_sql, tier_table[tier]);
			if (SPI_execute_with_args(sql, 9, types, args, NULL,
									  false, 0) != SPI_OK_INSERT)
				elog(ERROR, "apicount: upsert into %s failed", tier_table[tier]);
			return;
		}
		snprintf(sql, sizeof(sql), api_upsert_sql, tier_table[tier]);
		if (SPI_execute_with_args(sql, 11, types, args, NULL, false, 0)
			!= SPI_OK_INSERT)
			elog(ERROR, "apicount: upsert into %s failed", tier_table[tier]);
	}
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

/* one caller_minute row, its strings resolved */
typedef struct CallerRow
{
	FlushItem  *item;			/* the first item of the row (key, TID) */
	text	   *method;
	text	   *path;
	text	   *user;			/* NULL: no user id */
	int64		calls;
	int64		ok;
	int64		client_errors;
	int64		server_errors;
	bool		folded_before;	/* the caller may have been folded before
								 * its entry was made (CounterTail.late) */
	KnownRow	known;			/* known_rows.h */
	ItemPointerData tid;		/* for ROW_AT_TID */
} CallerRow;

/* byte order of two texts: the order of the "C" collation */
static int
text_bytes_cmp(const text *a, const text *b)
{
	int			la = VARSIZE_ANY_EXHDR(a);
	int			lb = VARSIZE_ANY_EXHDR(b);
	int			r = memcmp(VARDATA_ANY(a), VARDATA_ANY(b), Min(la, lb));

	return r != 0 ? r : (la > lb) - (la < lb);
}

/*
 * The order of caller_minute's unique key (bucket, method, path, client_ip,
 * user_id) as far as bytes tell it: rows upserted in this order probe and
 * fill neighbouring index pages one after another instead of a random page
 * each.  Under a collation other than "C" paths may come in another order
 * than the index's, but each path's rows still come together.  Returns 0
 * exactly when two rows are the same caller_minute row.
 */
static int
caller_row_cmp(const void *pa, const void *pb)
{
	const CallerRow *a = (const CallerRow *) pa;
	const CallerRow *b = (const CallerRow *) pb;
	const CounterKey *ka = &a->item->key;
	const CounterKey *kb = &b->item->key;
	int			r;

	if (ka->minute != kb->minute)
		return ka->minute < kb->minute ? -1 : 1;
	if ((r = text_bytes_cmp(a->method, b->method)) != 0)
		return r;
	if ((r = text_bytes_cmp(a->path, b->path)) != 0)
		return r;
	/* NULL client_ip and user_id sort last, as in the index */
	if ((ka->ip_family == 0) != (kb->ip_family == 0))
		return ka->ip_family == 0 ? 1 : -1;
	if (ka->ip_family != kb->ip_family)
		return ka->ip_family < kb->ip_family ? -1 : 1;
	if ((r = memcmp(ka->ip_addr, kb->ip_addr, sizeof(ka->ip_addr))) != 0)
		return r;
	if (ka->ip_bits != kb->ip_bits)
		return ka->ip_bits < kb->ip_bits ? -1 : 1;
	if ((a->user == NULL) != (b->user == NULL))
		return a->user == NULL ? 1 : -1;
	return a->user == NULL ? 0 : text_bytes_cmp(a->user, b->user);
}

/*
 * A caller key that names an API's "(other callers)" row (a user id sent
 * as OTHER_CALLERS without an IP): that row is shared with the API entry.
 */
static bool
is_other_callers_row(const CounterKey *key)
{
	return key->ip_family == 0 && key->user_h == apicount_other_callers_h;
}

/* heap order of two rows' TIDs */
static int
caller_tid_cmp(const void *pa, const void *pb)
{
	return ItemPointerCompare(&((CallerRow *) pa)->tid,
							  &((CallerRow *) pb)->tid);
}

/*
 * Merge sorted rows that are one caller_minute row; returns how many are
 * left.  Two items can be one row: the spill counters and the catch-all
 * entry of the current minute both write the catch-all's "(other
 * callers)" row, and so does a caller entry that names it
 * (is_other_callers_row).  One upsert may not touch a row twice.  Rows of
 * other keys are one item each.
 */
static int
merge_equal_rows(CallerRow *rows, int n)
{
	int			w = 0;
	int			i;

	if (n == 0)
		return 0;
	for (i = 1; i < n; i++)
	{
		if (caller_row_cmp(&rows[w], &rows[i]) == 0)
		{
			rows[w].calls += rows[i].calls;
			rows[w].ok += rows[i].ok;
			rows[w].client_errors += rows[i].client_errors;
			rows[w].server_errors += rows[i].server_errors;
			rows[w].folded_before |= rows[i].folded_before;
		}
		else
			rows[++w] = rows[i];
	}
	return w + 1;
}

/*
 * Execute one of the caller statements over rows[0 .. n-1] and note where
 * each row now is.  The insert and the upsert return one TID per row, in
 * order.  The update (missed given) also takes the rows' TIDs and numbers
 * as $11 and $12, returns the number and new TID of each row it found, and
 * appends the others to missed[] (*nmissed).
 */
static void
write_caller_rows(const char *sql, CallerRow *rows, int n,
				  CallerRow *missed, int *nmissed)
{
	Datum	   *cols[12];
	bool	   *ipnulls;
	bool	   *usernulls;
	Oid			types[12] = {TIMESTAMPTZOID, TEXTOID, TEXTOID, INETOID, TEXTOID,
		INT8OID, INT8OID, INT8OID, INT8OID, BOOLOID};
	Datum		args[12];
	int			ncols = 9 + schema_v2;	/* the row's columns */
	int			nargs = ncols + (missed != NULL ? 2 : 0);
	int			ret;
	bool	   *found = NULL;
	uint64		r;
	int			i,
				c;

	types[ncols] = TIDOID;
	types[ncols + 1] = INT4OID;
	for (c = 0; c < nargs; c++)
		cols[c] = palloc(sizeof(Datum) * n);
	ipnulls = palloc0(sizeof(bool) * n);
	usernulls = palloc0(sizeof(bool) * n);
	for (i = 0; i < n; i++)
	{
		const FlushItem *it = rows[i].item;

		cols[0][i] = TimestampTzGetDatum((TimestampTz) it->key.minute * USECS_PER_MINUTE);
		cols[1][i] = PointerGetDatum(rows[i].method);
		cols[2][i] = PointerGetDatum(rows[i].path);
		ipnulls[i] = it->key.ip_family == 0;
		cols[3][i] = ipnulls[i] ? (Datum) 0 : counters_key_inet(&it->key);
		usernulls[i] = rows[i].user == NULL;
		cols[4][i] = usernulls[i] ? (Datum) 0 : PointerGetDatum(rows[i].user);
		cols[5][i] = Int64GetDatum(rows[i].calls);
		cols[6][i] = Int64GetDatum(rows[i].ok);
		cols[7][i] = Int64GetDatum(rows[i].client_errors);
		cols[8][i] = Int64GetDatum(rows[i].server_errors);
		if (schema_v2)
			cols[9][i] = BoolGetDatum(rows[i].folded_before);
		if (missed != NULL)
		{
			cols[ncols][i] = PointerGetDatum(&rows[i].tid);
			cols[ncols + 1][i] = Int32GetDatum(i + 1);
		}
	}
	for (c = 0; c < nargs; c++)
	{
		Oid			elemtype = types[c];

		args[c] = make_array(cols[c], c == 3 ? ipnulls : c == 4 ? usernulls : NULL,
							 n, elemtype);
		types[c] = get_array_type(elemtype);
	}
	ret = SPI_execute_with_args(sql, nargs, types, args, NULL, false, 0);
	if (ret != (missed != NULL ? SPI_OK_UPDATE_RETURNING : SPI_OK_INSERT_RETURNING))
		elog(ERROR, "apicount: writing caller_minute failed (SPI result %d)", ret);
	if (missed == NULL && SPI_processed != (uint64) n)
		elog(ERROR, "apicount: caller_minute returned %llu rows for %d",
			 (unsigned long long) SPI_processed, n);
	if (missed != NULL)
		found = palloc0(sizeof(bool) * n);
	for (r = 0; r < SPI_processed; r++)
	{
		HeapTuple	tup = SPI_tuptable->vals[r];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		bool		isnull;
		int64		row = (int64) r;
		Datum		tid;

		if (missed != NULL)
		{
			row = DatumGetInt32(SPI_getbinval(tup, desc, 1, &isnull)) - 1;
			if (isnull || row < 0 || row >= n || found[row])
				elog(ERROR, "apicount: unexpected row number from caller_minute");
			found[row] = true;
		}
		tid = SPI_getbinval(tup, desc, missed != NULL ? 2 : 1, &isnull);
		if (isnull)
			elog(ERROR, "apicount: caller_minute returned no TID");
		ItemPointerCopy((ItemPointer) DatumGetPointer(tid), &rows[row].item->tid);
	}
	SPI_freetuptable(SPI_tuptable);
	if (missed != NULL)
	{
		for (i = 0; i < n; i++)
			if (!found[i])
				missed[(*nmissed)++] = rows[i];
		pfree(found);
	}
	for (c = 0; c < nargs; c++)
	{
		pfree(DatumGetPointer(args[c]));
		pfree(cols[c]);
	}
	pfree(ipnulls);
	pfree(usernulls);
}

/*
 * Insert rows that are not there yet, in a subtransaction: false when one
 * was there after all (a unique violation), and nothing was written.
 */
static bool
insert_new_caller_rows(CallerRow *rows, int n)
{
	MemoryContext cxt = CurrentMemoryContext;
	ResourceOwner owner = CurrentResourceOwner;
	volatile bool inserted = true;

	BeginInternalSubTransaction(NULL);
	MemoryContextSwitchTo(cxt);
	PG_TRY();
	{
		write_caller_rows(caller_insert_sql[schema_v2], rows, n, NULL, NULL);
		ReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(cxt);
		CurrentResourceOwner = owner;
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		/* end the subtransaction whatever the error, as PL/pgSQL does */
		MemoryContextSwitchTo(cxt);
		edata = CopyErrorData();
		FlushErrorState();
		RollbackAndReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(cxt);
		CurrentResourceOwner = owner;
		if (edata->sqlerrcode != ERRCODE_UNIQUE_VIOLATION)
			ReThrowError(edata);
		ereport(LOG,
				(errmsg("apicount: caller_minute already had rows the worker had not written; upserting them"),
				 errdetail("%s", edata->detail ? edata->detail : edata->message)));
		FreeErrorData(edata);
		inserted = false;
	}
	PG_END_TRY();
	return inserted;
}

/*
 * The update by TID must run as a nested loop of TID scans, whatever the
 * planner thinks of a hash join over a sequential scan of caller_minute
 * (reverted at the end of the flush transaction).
 */
static void
prefer_tid_scans(void)
{
	(void) set_config_option("enable_hashjoin", "off", PGC_USERSET,
							 PGC_S_SESSION, GUC_ACTION_LOCAL, true, 0, false);
	(void) set_config_option("enable_mergejoin", "off", PGC_USERSET,
							 PGC_S_SESSION, GUC_ACTION_LOCAL, true, 0, false);
}

/*
 * Write the caller_minute rows, each the cheapest safe way (known_rows.h): rows
 * last written at a known TID by an update there, rows known to be new by
 * a plain insert, and the others, or where either guess was wrong, by the
 * upsert.  Each row's new TID lands in its first item.
 */
static void
write_caller_minute(FlushItem *items, int nitems)
{
	int			n = 0,
				nnew = 0,
				nat = 0,
				nother = 0,
				i;
	CallerRow  *rows;
	CallerRow  *newrows;
	CallerRow  *atrows;
	text	   *other_callers = cstring_to_text(OTHER_CALLERS);

	/* up to max_entries items: may pass 1 GB */
	rows = MemoryContextAllocHuge(CurrentMemoryContext,
								  sizeof(CallerRow) * Max(nitems, 1));
	for (i = 0; i < nitems; i++)
	{
		FlushItem  *it = &items[i];

		if (is_api_item(it))
		{
			/* the API's "(other callers)" row: always the upsert */
			if (it->o.calls == 0)
				continue;
			rows[n].item = it;
			rows[n].method = DatumGetTextPP(string_datum(it->key.method_h));
			rows[n].path = DatumGetTextPP(string_datum(it->key.path_h));
			rows[n].user = other_callers;
			rows[n].calls = it->o.calls;
			rows[n].ok = it->o.ok;
			rows[n].client_errors = it->o.client_errors;
			rows[n].server_errors = it->o.server_errors;
			rows[n].folded_before = false;
			rows[n].known = ROW_UNKNOWN;
			n++;
			continue;
		}
		if (!(it->key.flags & KEY_TRACKED) || it->d.calls == 0)
			continue;
		rows[n].item = it;
		rows[n].method = DatumGetTextPP(string_datum(it->key.method_h));
		rows[n].path = DatumGetTextPP(string_datum(it->key.path_h));
		rows[n].user = it->key.user_h == 0 ? NULL :
			DatumGetTextPP(string_datum(it->key.user_h));
		rows[n].calls = it->d.calls;
		rows[n].ok = it->d.ok;
		rows[n].client_errors = it->d.client_errors;
		rows[n].server_errors = it->d.server_errors;
		rows[n].folded_before = entry_tail(it->entry)->late != 0;
		rows[n].known = is_other_callers_row(&it->key) ? ROW_UNKNOWN :
			known_rows_get(it->entry, &rows[n].tid);
		n++;
	}
	if (n == 0)
		return;

	/* split by how they will be written; the other rows stay in rows[] */
	newrows = MemoryContextAllocHuge(CurrentMemoryContext,
									 sizeof(CallerRow) * n);
	atrows = MemoryContextAllocHuge(CurrentMemoryContext,
									sizeof(CallerRow) * n);
	for (i = 0; i < n; i++)
	{
		if (rows[i].known == ROW_NEW)
			newrows[nnew++] = rows[i];
		else if (rows[i].known == ROW_AT_TID)
			atrows[nat++] = rows[i];
		else
			rows[nother++] = rows[i];
	}

	/*
	 * Inserts and upserts go in the unique index's order, updates by TID in
	 * heap order.  "(other callers)" rows, the only ones items share, are
	 * all upserted, so merging among those is enough.
	 */
	qsort(rows, nother, sizeof(CallerRow), caller_row_cmp);
	nother = merge_equal_rows(rows, nother);
	qsort(newrows, nnew, sizeof(CallerRow), caller_row_cmp);
	qsort(atrows, nat, sizeof(CallerRow), caller_tid_cmp);

	if (nat > 0)
	{
		int			before = nother;

		prefer_tid_scans();
		write_caller_rows(caller_update_sql[schema_v2], atrows, nat, rows, &nother);
		caller_writes.updated += nat - (nother - before);
	}
	if (nnew > 0)
	{
		if (insert_new_caller_rows(newrows, nnew))
			caller_writes.inserted += nnew;
		else
		{
			memcpy(rows + nother, newrows, sizeof(CallerRow) * nnew);
			nother += nnew;
		}
	}
	if (nother > 0)
	{
		write_caller_rows(caller_upsert_sql[schema_v2], rows, nother, NULL, NULL);
		caller_writes.upserted += nother;
	}
}

/* snapshots of the summaries of heavy callers that this flush writes */
typedef struct HeavyDue
{
	int			nminutes;
	int32		minutes[HEAVY_RING];
	HeavySnapshot *snaps[HEAVY_RING * HEAVY_NDIMS];	/* NULL: none */
} HeavyDue;

/* the minutes past the live horizon (all of them at shutdown) */
static void
take_heavy_snapshots(HeavyDue *due)
{
	int32		now_minute = apicount_minute_of(GetCurrentTimestamp());
	int			i,
				d;

	due->nminutes = heavy_due_minutes(flush_heavy_all ? PG_INT32_MAX :
									  now_minute - 2, due->minutes);
	for (i = 0; i < due->nminutes; i++)
		for (d = 0; d < HEAVY_NDIMS; d++)
			due->snaps[i * HEAVY_NDIMS + d] = heavy_snapshot(d, due->minutes[i]);
}

static void
write_heavy_snapshot(const HeavySnapshot *snap)
{
	int			n = snap->n;
	int			i,
				c;
	Datum	   *cols[5];
	bool	   *ipnulls;
	bool	   *usernulls;
	Oid			elemtypes[5] = {TEXTOID, TEXTOID, INETOID, TEXTOID, INT8OID};
	Datum		args[11];
	Oid			types[11];
	Datum	   *errs;
	bool		prev_written = false;
	int64		prev_bound = 0;
	Datum	   *calls_error;
	int			w = 0;
	Datum		bucket = TimestampTzGetDatum((TimestampTz) snap->minute *
											 USECS_PER_MINUTE);
	Datum		grouping = CStringGetTextDatum(heavy_dim_names[snap->dim]);

	if (snap->folded == 0)
		return;
	for (c = 0; c < 5; c++)
		cols[c] = palloc(sizeof(Datum) * Max(n, 1));
	calls_error = palloc(sizeof(Datum) * Max(n, 1));
	errs = palloc(sizeof(Datum) * Max(n, 1));
	ipnulls = palloc0(sizeof(bool) * Max(n, 1));
	usernulls = palloc0(sizeof(bool) * Max(n, 1));
	for (i = 0; i < n; i++)
	{
		const HeavyCounter *hc = &snap->counters[i];
		text	   *m;
		text	   *p;

		if (snap->dim == HEAVY_API)
		{
			/* a folded API: the counter keeps its method and path */
			m = cstring_to_text_with_len(hc->method, hc->method_len);
			p = cstring_to_text_with_len(hc->path, hc->path_len);
		}
		else
		{
			m = strtab_get_text(hc->key.method_h);
			p = strtab_get_text(hc->key.path_h);
		}
		/* the API entry holds them (heavy.h); never missing, but be safe */
		cols[0][w] = PointerGetDatum(m && p ? m : cstring_to_text(ANY_METHOD));
		cols[1][w] = PointerGetDatum(m && p ? p : cstring_to_text(OTHER_PATH));
		ipnulls[w] = hc->key.ip_family == 0;
		cols[2][w] = ipnulls[w] ? (Datum) 0 : counters_key_inet(&hc->key);
		usernulls[w] = hc->key.user_h == 0;
		if (!usernulls[w])
			cols[3][w] = PointerGetDatum(cstring_to_text_with_len(hc->user,
																  hc->user_len));
		cols[4][w] = Int64GetDatum((int64) hc->count);
		calls_error[w] = Int64GetDatum((int64) hc->error);
		errs[w] = Int64GetDatum((int64) heavy_counter_errors(hc));
		w++;
	}
	args[0] = bucket;
	types[0] = TIMESTAMPTZOID;
	args[1] = grouping;
	types[1] = TEXTOID;
	/* the bound of a summary of this minute written before, if any */
	if (SPI_execute_with_args(heavy_prev_bound_sql, 2, types, args, NULL, true, 1)
		!= SPI_OK_SELECT)
		elog(ERROR, "apicount: reading heavy_minute_bounds failed");
	if (SPI_processed > 0)
	{
		bool		isnull;

		prev_written = true;
		prev_bound = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0],
												 SPI_tuptable->tupdesc, 1, &isnull));
	}
	for (c = 0; c < 5; c++)
	{
		args[2 + c] = make_array(cols[c], c == 2 ? ipnulls : c == 3 ? usernulls : NULL,
								 w, elemtypes[c]);
		types[2 + c] = get_array_type(elemtypes[c]);
	}
	args[7] = make_array(calls_error, NULL, w, INT8OID);
	types[7] = get_array_type(INT8OID);
	args[8] = make_array(errs, NULL, w, INT8OID);
	types[8] = get_array_type(INT8OID);
	args[9] = Int64GetDatum((int64) snap->min_count);
	args[10] = Int64GetDatum(prev_bound);
	types[9] = types[10] = INT8OID;
	if (prev_written && snap->min_count > 0 &&
		SPI_execute_with_args(heavy_age_rows_sql, 11, types, args, NULL, false, 0)
		!= SPI_OK_UPDATE)
		elog(ERROR, "apicount: merging caller_heavy_minute failed");
	if (w > 0 &&
		SPI_execute_with_args(heavy_rows_sql, 11, types, args, NULL, false, 0)
		!= SPI_OK_INSERT)
		elog(ERROR, "apicount: writing caller_heavy_minute failed");
	args[2] = Int64GetDatum((int64) snap->folded);
	args[3] = Int64GetDatum((int64) snap->min_count);
	types[2] = types[3] = INT8OID;
	if (SPI_execute_with_args(heavy_bound_sql, 4, types, args, NULL, false, 0)
		!= SPI_OK_INSERT)
		elog(ERROR, "apicount: writing heavy_minute_bounds failed");
}

static void
write_heavy(const HeavyDue *due)
{
	int			i;

	for (i = 0; i < due->nminutes * HEAVY_NDIMS; i++)
		if (due->snaps[i] != NULL)
			write_heavy_snapshot(due->snaps[i]);
}

/* after the write: the ring slots go to later minutes */
static void
retire_heavy(const HeavyDue *due)
{
	int32		now_minute = apicount_minute_of(GetCurrentTimestamp());
	int			i;

	for (i = 0; i < due->nminutes; i++)
		heavy_retire(due->minutes[i], now_minute);
}

void
flush_discard_heavy(void)
{
	HeavyDue	due;

	due.nminutes = heavy_due_minutes(apicount_minute_of(GetCurrentTimestamp()) - 2,
									 due.minutes);
	retire_heavy(&due);
}

bool
flush_counters(int64 *written, char *errbuf, int errlen)
{
	HeavyDue	due;
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
	take_heavy_snapshots(&due);
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
		schema_v2 = installed_schema_v2();
		if (nitems > 0 || nlat > 0)
		{
			upsert_api_rows(items, nitems, lat, nlat, TIER_MINUTE);
			upsert_api_rows(items, nitems, lat, nlat, TIER_HOUR);
			if (table_exists("api_day"))	/* from 0.4 on */
			{
				upsert_api_rows(items, nitems, lat, nlat, TIER_DAY);
				upsert_api_rows(items, nitems, lat, nlat, TIER_TOTAL_MINUTE);
				upsert_api_rows(items, nitems, lat, nlat, TIER_TOTAL_HOUR);
				upsert_api_rows(items, nitems, lat, nlat, TIER_TOTAL_DAY);
			}
			write_caller_minute(items, nitems);
		}
		if (schema_v2)
			write_heavy(&due);	/* 0.1 has no tables for them: retired unwritten */
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
		retire_heavy(&due);
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

#define RETENTION_BATCH		10000
#define RETENTION_MAX_BATCHES 20

typedef struct RetentionBatch
{
	const char *table;
	TimestampTz cutoff;
	int64		deleted;
} RetentionBatch;

static void
delete_batch(void *arg)
{
	RetentionBatch *b = (RetentionBatch *) arg;
	char		sql[512];
	Oid			argtypes[1] = {TIMESTAMPTZOID};
	Datum		args[1] = {TimestampTzGetDatum(b->cutoff)};

	/* a table of a later version than the one installed */
	if (!table_exists(b->table))
		return;

	snprintf(sql, sizeof(sql),
			 "DELETE FROM apicount.%s WHERE ctid OPERATOR(pg_catalog.=) ANY "
			 "(ARRAY(SELECT ctid FROM apicount.%s "
			 "WHERE bucket OPERATOR(pg_catalog.<) $1 LIMIT %d))",
			 b->table, b->table, RETENTION_BATCH);
	if (SPI_execute_with_args(sql, 1, argtypes, args, NULL, false, 0)
		!= SPI_OK_DELETE)
		elog(ERROR, "apicount: retention delete on %s failed", b->table);
	b->deleted = (int64) SPI_processed;
}

/*
 * Delete the rows past their tier's retention, in batches of
 * RETENTION_BATCH rows per transaction and at most RETENTION_MAX_BATCHES
 * per table and call: the minute tier (api_minute and the caller tables)
 * by apicount.retention_minute, api_hour by apicount.retention_hour and
 * api_day (0.4) by apicount.retention_day; api_total_minute, _hour and
 * _day (0.4) with their tiers.
 */
void
flush_apply_retention(void)
{
	static const struct
	{
		const char *table;
		int			tier;
	}			tables[] = {
		{"api_minute", 0}, {"api_hour", 1}, {"api_day", 2},
		{"api_total_minute", 0}, {"api_total_hour", 1}, {"api_total_day", 2},
		{"caller_minute", 0}, {"caller_heavy_minute", 0},
		{"heavy_minute_bounds", 0}
	};
	TimestampTz now = GetCurrentTimestamp();
	int			t,
				i;

	for (t = 0; t < lengthof(tables); t++)
	{
		TimestampTz cutoff = now -
			apicount_retention_tier_secs(tables[t].tier) * USECS_PER_SEC;

		for (i = 0; i < RETENTION_MAX_BATCHES; i++)
		{
			RetentionBatch b = {tables[t].table, cutoff, 0};

			if (!worker_run_txn("apicount retention", delete_batch, &b) ||
				b.deleted < RETENTION_BATCH)
				break;
		}
	}
}

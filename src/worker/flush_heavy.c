/*-------------------------------------------------------------------------
 * flush_heavy.c
 *		The summaries of heavy callers in a flush: caller_heavy_minute and
 *		heavy_minute_bounds.
 *
 * Owns writing the summaries (heavy.h) of the minutes past the live
 * horizon (all of them at shutdown), merged with a summary of the same
 * minute written before a restart, and retiring their ring slots once the
 * flush has committed.
 *
 * Snapshots are taken before the flush transaction, never under the
 * partition locks (heavy.h); the writes run inside it (flush.c), with SPI
 * connected.  Memory: the flush's context (reset every cycle).
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/timestamp.h"

#include "counters.h"
#include "flush.h"
#include "heavy.h"
#include "strtab.h"

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

/* the minutes past the live horizon (all of them at shutdown) */
void
flush_heavy_take(HeavyDue *due)
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
	Datum		bucket = TimestampTzGetDatum(apicount_minute_start(snap->minute));
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
		flush_bind_array(cols[c], c == 2 ? ipnulls : c == 3 ? usernulls : NULL,
						 w, elemtypes[c], &args[2 + c], &types[2 + c]);
	flush_bind_array(calls_error, NULL, w, INT8OID, &args[7], &types[7]);
	flush_bind_array(errs, NULL, w, INT8OID, &args[8], &types[8]);
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

void
flush_heavy_write(const HeavyDue *due)
{
	int			i;

	for (i = 0; i < due->nminutes * HEAVY_NDIMS; i++)
		if (due->snaps[i] != NULL)
			write_heavy_snapshot(due->snaps[i]);
}

/* after the write: the ring slots go to later minutes */
void
flush_heavy_retire(const HeavyDue *due)
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
	flush_heavy_retire(&due);
}

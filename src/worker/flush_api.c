/*-------------------------------------------------------------------------
 * flush_api.c
 *		The API rows of a flush: api_minute, api_hour, api_day and their
 *		sums over all APIs api_total_minute, _hour and _day (0.4).
 *
 * Owns the API tiers' upserts.  The items of the API entries (and the
 * latency pages) are summed per (bucket, method, path) of a tier, or per
 * bucket for the sums over all APIs, and each tier gets one upsert.  All
 * tiers are written by the same flush transaction, so they always agree,
 * late hits included.
 *
 * Runs inside the flush transaction (flush.c), with SPI connected; no
 * shared lock is held.  Memory: the flush's context (reset every cycle).
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "utils/hsearch.h"
#include "utils/lsyscache.h"
#include "utils/timestamp.h"

#include "counters.h"
#include "flush.h"
#include "latency_sql.h"
#include "latency_store.h"

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

static inline Datum
ms_datum(uint64 ns)
{
	return Float8GetDatum((double) ns / 1000000.0);
}


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
void
flush_api_rows(FlushItem *items, int nitems, LatSnap *lat, int nlat,
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
		cols[1][i] = IS_TOTAL(tier) ? (Datum) 0 : flush_string_datum(row->key.method_h);
		cols[2][i] = IS_TOTAL(tier) ? (Datum) 0 : flush_string_datum(row->key.path_h);
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
		args[i] = flush_make_array(cols[i],
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

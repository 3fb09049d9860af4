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

static const int tier_minutes[] = {1, 60, 1440, 1, 60, 1440};
static const char *const tier_table[] = {"api_minute", "api_hour", "api_day",
"api_total_minute", "api_total_hour", "api_total_day"};

/* what the values of an API row need besides the row */
typedef struct ApiBind
{
	LatSnap    *lat;			/* the latency pages of the flush */
	uint64	   *dense;			/* LAT_NBUCKETS of scratch */
} ApiBind;

static Datum
api_bucket(const void *row, void *cxt, bool *isnull)
{
	return TimestampTzGetDatum(apicount_minute_start(((const ApiRow *) row)->key.minute));
}

static Datum
api_method(const void *row, void *cxt, bool *isnull)
{
	return flush_string_datum(((const ApiRow *) row)->key.method_h);
}

static Datum
api_path(const void *row, void *cxt, bool *isnull)
{
	return flush_string_datum(((const ApiRow *) row)->key.path_h);
}

static Datum
api_latency_sum(const void *row, void *cxt, bool *isnull)
{
	return Float8GetDatum((double) ((const ApiRow *) row)->d.lat_sum_ns / 1000000.0);
}

static Datum
api_latency_max(const void *row, void *cxt, bool *isnull)
{
	const ApiRow *r = (const ApiRow *) row;

	*isnull = r->d.lat_count == 0;
	return Float8GetDatum((double) r->d.lat_max_ns / 1000000.0);
}

static Datum
api_latency_hist(const void *row, void *cxt, bool *isnull)
{
	const ApiRow *r = (const ApiRow *) row;
	ApiBind    *b = (ApiBind *) cxt;

	*isnull = r->lat.n == 0;
	return *isnull ? (Datum) 0 :
		PointerGetDatum(lat_pages_to_bytea(b->lat, &r->lat, b->dense));
}

#define API_COUNT(name, field) \
	{name, INT8OID, MERGE_ADD, 0, NULL, offsetof(ApiRow, field)}

/*
 * The columns of api_minute, api_hour and api_day, in the order of the
 * statement; api_total_* have them all but those marked COL_PER_API.
 */
static const RollupColumn api_columns[] = {
	{"bucket", TIMESTAMPTZOID, MERGE_KEY, 0, api_bucket},
	{"method", TEXTOID, MERGE_KEY, COL_PER_API, api_method},
	{"path", TEXTOID, MERGE_KEY, COL_PER_API, api_path},
	API_COUNT("calls", d.calls),
	API_COUNT("ok", d.ok),
	API_COUNT("client_errors", d.client_errors),
	API_COUNT("server_errors", d.server_errors),
	{"latency_sum_ms", FLOAT8OID, MERGE_ADD, 0, api_latency_sum},
	{"latency_max_ms", FLOAT8OID, MERGE_MAX, 0, api_latency_max},
	API_COUNT("latency_count", d.lat_count),
	{"latency_hist", BYTEAOID, MERGE_HIST, 0, api_latency_hist},
};

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
	ApiRow	  **rowv;
	int			n,
				i;
	ColumnSet	set;
	ApiBind		bind;
	Datum		args[FLUSH_MAX_COLUMNS];
	Oid			types[FLUSH_MAX_COLUMNS];

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
	rowv = palloc(sizeof(ApiRow *) * n);
	i = 0;
	hash_seq_init(&seq, rows);
	while ((row = hash_seq_search(&seq)) != NULL)
		rowv[i++] = row;
	column_set_init(&set, api_columns, lengthof(api_columns),
					IS_TOTAL(tier) ? COL_PER_API : 0);
	bind.lat = lat;
	bind.dense = palloc0(sizeof(uint64) * LAT_NBUCKETS);
	column_bind(&set, (const void *const *) rowv, n, &bind, args, types);
	if (SPI_execute_with_args(rollup_insert_sql(tier_table[tier], &set, true, NULL),
							  set.n, types, args, NULL, false, 0) != SPI_OK_INSERT)
		elog(ERROR, "apicount: upsert into %s failed", tier_table[tier]);
}

/*-------------------------------------------------------------------------
 * flush_retention.c
 *		Deleting rollup rows past their tier's retention.
 *
 * Owns the retention of every rollup table: the minute tier (api_minute,
 * api_total_minute, caller_minute and the heavy summaries) by
 * apicount.retention_minute, the hour tier (api_hour, api_total_hour,
 * caller_hour) by apicount.retention_hour, the day tier (api_day,
 * api_total_day, caller_day) by apicount.retention_day.  Deletes go in bounded batches, each in its own
 * transaction (worker_txn.h), so a long backlog never holds locks for
 * long; the next call goes on where this one stopped.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "utils/timestamp.h"

#include "flush.h"
#include "guc.h"
#include "worker_txn.h"

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
	if (!flush_table_exists(b->table))
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
 * _day (0.4) and caller_hour and caller_day (0.6) with their tiers.
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
		{"caller_minute", 0}, {"caller_hour", 1}, {"caller_day", 2},
		{"caller_heavy_minute", 0},
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

/*-------------------------------------------------------------------------
 * live.c
 *		Set-returning functions over shared memory: live entries, sliding
 *		windows, statistics, and apicount.flush().
 *
 * Owns the read side of the counter table.  A scan copies what it needs
 * under shared partition locks (ingest of existing keys goes on), then
 * releases them before resolving strings and building tuples.
 *
 * Lock rule: strings are resolved only after the partition locks are
 * released (never nest a string-table lock inside them).  An entry freed
 * in between had nothing unflushed, so skipping it loses nothing that the
 * rollups do not already hold.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <math.h>

#include "fmgr.h"
#include "funcapi.h"
#include "access/xact.h"
#include "utils/builtins.h"
#include <sys/socket.h>

#include "utils/inet.h"
#include "utils/timestamp.h"

#include "counters.h"
#include "ingest.h"
#include "normalize.h"
#include "strtab.h"
#include "worker.h"

PG_FUNCTION_INFO_V1(apicount_live_entries);
PG_FUNCTION_INFO_V1(apicount_live_window);
PG_FUNCTION_INFO_V1(apicount_stats);
PG_FUNCTION_INFO_V1(apicount_flush);

typedef struct LiveRow
{
	CounterKey	key;
	CounterDelta d;				/* unflushed */
	uint64		calls;			/* total in the minute or in the window */
	uint64		ok;
	uint64		errors;
} LiveRow;

static bool
resolve(uint64 h, Datum *out)
{
	char		buf[APICOUNT_MAX_PATH + 1];
	int			len = strtab_get(h, buf, sizeof(buf));

	if (len < 0)
		return false;
	*out = PointerGetDatum(cstring_to_text_with_len(buf, len));
	return true;
}

static Datum
inet_from_key(const CounterKey *key)
{
	inet	   *ip = palloc0(sizeof(inet));

	ip_family(ip) = key->ip_family;
	ip_bits(ip) = key->ip_bits;
	memcpy(ip_addr(ip), key->ip_addr, ip_addrsize(ip));
	SET_INET_VARSIZE(ip);
	return InetPGetDatum(ip);
}

/* fill method, path, client_ip, user_id; false if a string vanished */
static bool
key_columns(const CounterKey *key, Datum *values, bool *nulls)
{
	if (!resolve(key->method_h, &values[0]) ||
		!resolve(key->path_h, &values[1]))
		return false;
	nulls[0] = nulls[1] = false;
	nulls[2] = key->ip_family == 0;
	values[2] = nulls[2] ? (Datum) 0 : inet_from_key(key);
	nulls[3] = key->user_h == 0;
	if (!nulls[3] && !resolve(key->user_h, &values[3]))
		return false;
	return true;
}

/*
 * Copy rows from shared memory.  If window_first/last are given (global
 * slot numbers), calls/ok/errors cover those slots; otherwise the minute.
 */
static LiveRow *
collect(int *nrows, bool window, int64 first_slot, int64 last_slot)
{
	int			cap = 1024;
	int			n = 0;
	LiveRow    *rows = palloc_extended(cap * sizeof(LiveRow), MCXT_ALLOC_HUGE);
	HASH_SEQ_STATUS seq;
	CounterEntry *e;
	int			nslots = apicount_shared->nslots;
	int			slot_seconds = apicount_shared->slot_seconds;
	int32		min_minute = (int32) ((first_slot * slot_seconds) / 60) - 1;

	counters_lock_all(LW_SHARED);
	hash_seq_init(&seq, apicount_counters);
	while ((e = hash_seq_search(&seq)) != NULL)
	{
		LiveRow		r;
		int			i;
		int64		base;

		if (window && e->key.minute < min_minute)
			continue;
		memset(&r, 0, sizeof(r));
		base = (int64) e->key.minute * nslots;
		for (i = 0; i < nslots; i++)
		{
			int64		g = base + i;

			if (window && (g < first_slot || g > last_slot))
				continue;
			r.calls += pg_atomic_read_u32(&e->slots[i].calls);
			r.ok += pg_atomic_read_u32(&e->slots[i].ok);
			r.errors += pg_atomic_read_u32(&e->slots[i].errors);
		}
		if (window && r.calls == 0)
			continue;
		r.key = e->key;
		counters_read_delta(e, &r.d);
		if (n == cap)
		{
			cap *= 2;
			rows = repalloc_huge(rows, cap * sizeof(LiveRow));
		}
		rows[n++] = r;
	}
	counters_unlock_all();
	*nrows = n;
	return rows;
}

/*
 * apicount._live_entries(): every entry with its minute total and its
 * unflushed deltas.
 */
Datum
apicount_live_entries(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	LiveRow    *rows;
	int			n,
				i;

	apicount_require_preload();
	InitMaterializedSRF(fcinfo, 0);
	rows = collect(&n, false, 0, 0);
	for (i = 0; i < n; i++)
	{
		Datum		values[14];
		bool		nulls[14];
		LiveRow    *r = &rows[i];

		memset(nulls, 0, sizeof(nulls));
		values[0] = TimestampTzGetDatum((TimestampTz) r->key.minute * USECS_PER_MINUTE);
		if (!key_columns(&r->key, values + 1, nulls + 1))
			continue;
		values[5] = BoolGetDatum((r->key.flags & KEY_TRACKED) != 0);
		values[6] = Int64GetDatum(r->calls);
		values[7] = Int64GetDatum(r->d.calls);
		values[8] = Int64GetDatum(r->d.ok);
		values[9] = Int64GetDatum(r->d.client_errors);
		values[10] = Int64GetDatum(r->d.server_errors);
		values[11] = Int64GetDatum(r->d.lat_count);
		values[12] = Float8GetDatum((double) r->d.lat_sum_ns / 1000000.0);
		nulls[13] = r->d.lat_count == 0;
		values[13] = Float8GetDatum((double) r->d.lat_max_ns / 1000000.0);
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	return (Datum) 0;
}

/*
 * apicount._live_window(since interval): per entry, the hits in the last
 * ceil(since / slot_seconds) slots up to the slot holding now().
 */
Datum
apicount_live_window(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	Interval   *since = PG_GETARG_INTERVAL_P(0);
	int64		since_us;
	int64		k;
	int64		now_sec;
	int64		cur;
	int			slot_seconds;
	LiveRow    *rows;
	int			n,
				i;

	apicount_require_preload();
	slot_seconds = apicount_shared->slot_seconds;
	since_us = since->time + (int64) since->day * USECS_PER_DAY +
		(int64) since->month * DAYS_PER_MONTH * USECS_PER_DAY;
	if (since_us <= 0 || since_us > (int64) LIVE_HORIZON_SECS * USECS_PER_SEC)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("sliding window must be longer than 0 and at most %d seconds",
						LIVE_HORIZON_SECS)));
	k = (since_us + (int64) slot_seconds * USECS_PER_SEC - 1) /
		((int64) slot_seconds * USECS_PER_SEC);
	now_sec = (int64) apicount_minute_of(GetCurrentTransactionStartTimestamp()) * 60 +
		apicount_slot_of(GetCurrentTransactionStartTimestamp()) * slot_seconds;
	cur = now_sec / slot_seconds;

	InitMaterializedSRF(fcinfo, 0);
	rows = collect(&n, true, cur - k + 1, cur);
	for (i = 0; i < n; i++)
	{
		Datum		values[8];
		bool		nulls[8];
		LiveRow    *r = &rows[i];

		memset(nulls, 0, sizeof(nulls));
		if (!key_columns(&r->key, values, nulls))
			continue;
		values[4] = BoolGetDatum((r->key.flags & KEY_TRACKED) != 0);
		values[5] = Int64GetDatum(r->calls);
		values[6] = Int64GetDatum(r->ok);
		values[7] = Int64GetDatum(r->errors);
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	return (Datum) 0;
}

Datum
apicount_stats(PG_FUNCTION_ARGS)
{
	TupleDesc	tupdesc;
	Datum		values[11];
	bool		nulls[11];
	ApicountShared *s;
	uint64		last_at;
	int			pid;

	apicount_require_preload();
	s = apicount_shared;
	if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type must be a row type");

	SpinLockAcquire(&s->mutex);
	pid = s->worker_pid;
	SpinLockRelease(&s->mutex);

	memset(nulls, 0, sizeof(nulls));
	values[0] = Int64GetDatum(s->capacity);
	values[1] = Int64GetDatum((int64) pg_atomic_read_u32(&s->normal_entries) +
							  pg_atomic_read_u32(&s->overflow_entries));
	values[2] = Int64GetDatum(pg_atomic_read_u64(&s->hits));
	values[3] = Int64GetDatum(pg_atomic_read_u64(&s->overflow_hits));
	values[4] = Int64GetDatum(pg_atomic_read_u64(&s->truncated));
	values[5] = Int64GetDatum(pg_atomic_read_u64(&s->flushes));
	values[6] = Int64GetDatum(pg_atomic_read_u64(&s->flush_failures));
	last_at = pg_atomic_read_u64(&s->last_flush_at);
	nulls[7] = last_at == 0;
	values[7] = TimestampTzGetDatum((TimestampTz) last_at);
	nulls[8] = last_at == 0;
	values[8] = Float8GetDatum((double) pg_atomic_read_u64(&s->last_flush_us) / 1000.0);
	nulls[9] = pid == 0;
	values[9] = Int32GetDatum(pid);
	values[10] = Int64GetDatum((int64) s->shmem_bytes);

	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(tupdesc, values, nulls)));
}

Datum
apicount_flush(PG_FUNCTION_ARGS)
{
	apicount_require_preload();
	PG_RETURN_INT64(worker_request_flush());
}

/*-------------------------------------------------------------------------
 * flush_callers.c
 *		The caller rows of a flush: caller_minute, and each API's
 *		"(other callers)" row; their sums per hour and day in caller_hour
 *		and caller_day (0.6).
 *
 * Owns the three ways of writing a caller_minute row, each chosen as the
 * cheapest safe one (known_rows.h): an update at the TID the worker got
 * back last time (the key checked), a plain insert for a row no one can
 * have written yet, and the upsert for any other row or where either guess
 * was wrong (a unique violation, a TID that no longer holds the key).
 * Each row's new TID lands in its first item, for known_rows_written after
 * the commit.  A server whose library is newer than the installed
 * extension writes the 0.1 columns (flush_schema_v2).  The hour and day
 * tiers are always upserted, in the same transaction, so the three tiers
 * agree, late hits included.
 *
 * Runs inside the flush transaction (flush.c), with SPI connected; no
 * shared lock is held.  The plain insert runs in a subtransaction.
 * Memory: the flush's context (reset every cycle).
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "lib/stringinfo.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "counters.h"
#include "entry_table.h"
#include "flush.h"
#include "known_rows.h"

/* one caller_minute row, its strings resolved */
typedef struct CallerRow
{
	FlushItem  *item;			/* the first item of the row (key, TID) */
	int32		minute;			/* the bucket, in epoch minutes: the item's
								 * minute, or its hour's or day's first */
	int32		first_minute;	/* the first and last minutes of the items */
	int32		last_minute;	/* merged into the row (hour and day tiers) */
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

/* the three statements (write_caller_rows) */
typedef enum CallerWrite
{
	CALLER_UPSERT,				/* any row */
	CALLER_INSERT,				/* rows that are not there yet (known_rows.h) */
	CALLER_UPDATE				/* rows this worker wrote before, by their TID */
} CallerWrite;

static Datum
caller_bucket(const void *row, void *cxt, bool *isnull)
{
	return TimestampTzGetDatum(apicount_minute_start(((const CallerRow *) row)->minute));
}

static Datum
caller_method(const void *row, void *cxt, bool *isnull)
{
	return PointerGetDatum(((const CallerRow *) row)->method);
}

static Datum
caller_path(const void *row, void *cxt, bool *isnull)
{
	return PointerGetDatum(((const CallerRow *) row)->path);
}

static Datum
caller_ip(const void *row, void *cxt, bool *isnull)
{
	const CounterKey *key = &((const CallerRow *) row)->item->key;

	*isnull = key->ip_family == 0;
	return *isnull ? (Datum) 0 : counters_key_inet(key);
}

static Datum
caller_user(const void *row, void *cxt, bool *isnull)
{
	const CallerRow *r = (const CallerRow *) row;

	*isnull = r->user == NULL;
	return PointerGetDatum(r->user);
}

static Datum
caller_folded_before(const void *row, void *cxt, bool *isnull)
{
	return BoolGetDatum(((const CallerRow *) row)->folded_before);
}

static Datum
caller_first_seen(const void *row, void *cxt, bool *isnull)
{
	return TimestampTzGetDatum(apicount_minute_start(((const CallerRow *) row)->first_minute));
}

static Datum
caller_last_seen(const void *row, void *cxt, bool *isnull)
{
	return TimestampTzGetDatum(apicount_minute_start(((const CallerRow *) row)->last_minute));
}

#define CALLER_COUNT(name, field) \
	{name, INT8OID, MERGE_ADD, 0, NULL, offsetof(CallerRow, field)}

/*
 * The columns of caller_minute, caller_hour and caller_day, in the order of
 * the statements; caller_minute has all but COL_COARSE_ONLY (its bucket is
 * its first and last minute).  A server whose library is newer than the
 * installed extension (before ALTER EXTENSION apicount UPDATE) writes those
 * of 0.1: all but COL_SINCE_0_2.
 */
static const RollupColumn caller_columns[] = {
	{"bucket", TIMESTAMPTZOID, MERGE_KEY, 0, caller_bucket},
	{"method", TEXTOID, MERGE_KEY, 0, caller_method},
	{"path", TEXTOID, MERGE_KEY, 0, caller_path},
	{"client_ip", INETOID, MERGE_KEY, COL_NULLABLE, caller_ip},
	{"user_id", TEXTOID, MERGE_KEY, COL_NULLABLE, caller_user},
	CALLER_COUNT("calls", calls),
	CALLER_COUNT("ok", ok),
	CALLER_COUNT("client_errors", client_errors),
	CALLER_COUNT("server_errors", server_errors),
	{"folded_before", BOOLOID, MERGE_OR, COL_SINCE_0_2, caller_folded_before},
	{"first_seen", TIMESTAMPTZOID, MERGE_MIN, COL_COARSE_ONLY, caller_first_seen},
	{"last_seen", TIMESTAMPTZOID, MERGE_MAX, COL_COARSE_ONLY, caller_last_seen},
};

/* the columns the installed extension has, of caller_minute or (coarse) its tiers */
static void
caller_column_set(ColumnSet *set, bool coarse)
{
	column_set_init(set, caller_columns, lengthof(caller_columns),
					(coarse ? 0 : COL_COARSE_ONLY) | (flush_schema_v2 ? 0 : COL_SINCE_0_2));
}

/*
 * The statement of one way of writing: the upsert and the plain insert
 * return the TID of each row, in order.  The update takes the rows' TIDs
 * and numbers as the two parameters after the columns, changes a row only
 * where its TID still holds its key, and returns the number and new TID
 * of each row it found.
 */
static char *
caller_sql(CallerWrite how, const ColumnSet *set)
{
	StringInfoData buf;

	if (how != CALLER_UPDATE)
		return rollup_insert_sql("caller_minute", set, how == CALLER_UPSERT,
								 "t.ctid");
	initStringInfo(&buf);
	appendStringInfoString(&buf, "UPDATE apicount.caller_minute AS t SET");
	column_merge_sql(&buf, set, "u");
	appendStringInfoString(&buf, " FROM (SELECT ");
	column_unnest_sql(&buf, set);
	column_unnest_param(&buf, set->n + 1, TIDOID, true);
	column_unnest_param(&buf, set->n + 2, INT4OID, true);
	appendStringInfoString(&buf, ") AS u(");
	column_names_sql(&buf, set);
	appendStringInfoString(&buf, ", tid, ord) WHERE t.ctid OPERATOR(pg_catalog.=) u.tid");
	column_key_match_sql(&buf, set, "u");
	appendStringInfoString(&buf, " RETURNING u.ord, t.ctid");
	return buf.data;
}

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

	if (a->minute != b->minute)
		return a->minute < b->minute ? -1 : 1;
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
			rows[w].first_minute = Min(rows[w].first_minute, rows[i].first_minute);
			rows[w].last_minute = Max(rows[w].last_minute, rows[i].last_minute);
		}
		else
			rows[++w] = rows[i];
	}
	return w + 1;
}

/*
 * Write rows[0 .. n-1] the given way (caller_sql) and note where each row
 * now is.  The update appends the rows it did not find to missed[]
 * (*nmissed).
 */
static void
write_caller_rows(CallerWrite how, CallerRow *rows, int n,
				  CallerRow *missed, int *nmissed)
{
	ColumnSet	set;
	const void **rowv = palloc(sizeof(void *) * n);
	Datum	   *extra = NULL;
	Datum		args[FLUSH_MAX_COLUMNS + 2];
	Oid			types[FLUSH_MAX_COLUMNS + 2];
	int			nargs;
	int			ret;
	bool	   *found = NULL;
	uint64		r;
	int			i,
				c;

	Assert((how == CALLER_UPDATE) == (missed != NULL));
	caller_column_set(&set, false);
	for (i = 0; i < n; i++)
		rowv[i] = &rows[i];
	column_bind(&set, rowv, n, NULL, args, types);
	nargs = set.n;
	if (missed != NULL)
	{
		/* the rows' TIDs and numbers */
		extra = palloc(sizeof(Datum) * n);
		for (i = 0; i < n; i++)
			extra[i] = PointerGetDatum(&rows[i].tid);
		flush_bind_array(extra, NULL, n, TIDOID, &args[nargs], &types[nargs]);
		nargs++;
		for (i = 0; i < n; i++)
			extra[i] = Int32GetDatum(i + 1);
		flush_bind_array(extra, NULL, n, INT4OID, &args[nargs], &types[nargs]);
		nargs++;
		pfree(extra);
	}
	ret = SPI_execute_with_args(caller_sql(how, &set), nargs, types, args, NULL,
								false, 0);
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
		pfree(DatumGetPointer(args[c]));
	pfree(rowv);
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
		write_caller_rows(CALLER_INSERT, rows, n, NULL, NULL);
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
 * Upsert the sums of rows[0 .. n-1] per bucket of `width` minutes (60: UTC
 * hours, 1440: UTC days) into `table`, a coarser twin of caller_minute.
 * rows[] is left as it was.
 */
static void
flush_caller_tier(const CallerRow *rows, int n, int32 width, const char *table)
{
	CallerRow  *tier = MemoryContextAllocHuge(CurrentMemoryContext,
											  sizeof(CallerRow) * n);
	const void **rowv = palloc(sizeof(void *) * n);
	ColumnSet	set;
	Datum		args[FLUSH_MAX_COLUMNS];
	Oid			types[FLUSH_MAX_COLUMNS];
	int			i,
				c;

	memcpy(tier, rows, sizeof(CallerRow) * n);
	/* UTC hours and days start at multiples of 60 and 1440 epoch minutes */
	for (i = 0; i < n; i++)
		tier[i].minute -= ((tier[i].minute % width) + width) % width;
	qsort(tier, n, sizeof(CallerRow), caller_row_cmp);
	n = merge_equal_rows(tier, n);
	for (i = 0; i < n; i++)
		rowv[i] = &tier[i];
	caller_column_set(&set, true);
	column_bind(&set, rowv, n, NULL, args, types);
	if (SPI_execute_with_args(rollup_insert_sql(table, &set, true, NULL),
							  set.n, types, args, NULL, false, 0) != SPI_OK_INSERT)
		elog(ERROR, "apicount: upsert into %s failed", table);
	for (c = 0; c < set.n; c++)
		pfree(DatumGetPointer(args[c]));
	pfree(rowv);
	pfree(tier);
}

/*
 * Write the caller_minute rows, each the cheapest safe way (known_rows.h): rows
 * last written at a known TID by an update there, rows known to be new by
 * a plain insert, and the others, or where either guess was wrong, by the
 * upsert.  Each row's new TID lands in its first item.
 */
void
flush_caller_rows(FlushItem *items, int nitems, CallerWrites *caller_writes)
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
			rows[n].minute = rows[n].first_minute = rows[n].last_minute = it->key.minute;
			rows[n].method = DatumGetTextPP(flush_string_datum(it->key.method_h));
			rows[n].path = DatumGetTextPP(flush_string_datum(it->key.path_h));
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
		rows[n].minute = rows[n].first_minute = rows[n].last_minute = it->key.minute;
		rows[n].method = DatumGetTextPP(flush_string_datum(it->key.method_h));
		rows[n].path = DatumGetTextPP(flush_string_datum(it->key.path_h));
		rows[n].user = it->key.user_h == 0 ? NULL :
			DatumGetTextPP(flush_string_datum(it->key.user_h));
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

	/* the hour and day tiers first: the split below reuses rows[] */
	if (flush_table_exists("caller_hour"))	/* from 0.6 on */
	{
		flush_caller_tier(rows, n, 60, "caller_hour");
		flush_caller_tier(rows, n, 1440, "caller_day");
	}

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
		write_caller_rows(CALLER_UPDATE, atrows, nat, rows, &nother);
		caller_writes->updated += nat - (nother - before);
	}
	if (nnew > 0)
	{
		if (insert_new_caller_rows(newrows, nnew))
			caller_writes->inserted += nnew;
		else
		{
			memcpy(rows + nother, newrows, sizeof(CallerRow) * nnew);
			nother += nnew;
		}
	}
	if (nother > 0)
	{
		write_caller_rows(CALLER_UPSERT, rows, nother, NULL, NULL);
		caller_writes->upserted += nother;
	}
}

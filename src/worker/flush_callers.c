/*-------------------------------------------------------------------------
 * flush_callers.c
 *		The caller rows of a flush: caller_minute, and each API's
 *		"(other callers)" row.
 *
 * Owns the three ways of writing a caller_minute row, each chosen as the
 * cheapest safe one (known_rows.h): an update at the TID the worker got
 * back last time (the key checked), a plain insert for a row no one can
 * have written yet, and the upsert for any other row or where either guess
 * was wrong (a unique violation, a TID that no longer holds the key).
 * Each row's new TID lands in its first item, for known_rows_written after
 * the commit.  A server whose library is newer than the installed
 * extension writes the 0.1 columns (flush_schema_v2).
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
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "counters.h"
#include "entry_table.h"
#include "flush.h"
#include "known_rows.h"

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
	int			ncols = 9 + flush_schema_v2;	/* the row's columns */
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
		if (flush_schema_v2)
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

		args[c] = flush_make_array(cols[c], c == 3 ? ipnulls : c == 4 ? usernulls : NULL,
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
		write_caller_rows(caller_insert_sql[flush_schema_v2], rows, n, NULL, NULL);
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
		write_caller_rows(caller_update_sql[flush_schema_v2], atrows, nat, rows, &nother);
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
		write_caller_rows(caller_upsert_sql[flush_schema_v2], rows, nother, NULL, NULL);
		caller_writes->upserted += nother;
	}
}

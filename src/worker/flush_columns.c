/*-------------------------------------------------------------------------
 * flush_columns.c
 *		From a rollup table's column list to its statements and arrays.
 *
 * Owns the one rule the flush's writes share: each column of a table is a
 * RollupColumn (flush.h) in one list (api_columns in flush_api.c,
 * caller_columns in flush_callers.c), and the statements (the column
 * names, the unnest of one array parameter per column, the conflict key,
 * the merge of each column on conflict) and the arrays bound to them are
 * generated from that list, in its order.  Also the one helper that binds
 * an array parameter.
 *
 * The statements take one array per column and unnest them in the select
 * list: a ProjectSet streams the rows, where a function scan in FROM would
 * first copy them all into a tuplestore (spilled to disk past work_mem).
 *
 * Runs inside the flush transaction.  Memory: the caller's context (the
 * flush's, reset every cycle).
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "lib/stringinfo.h"
#include "utils/array.h"
#include "utils/lsyscache.h"

#include "flush.h"

/* the name of a parameter's element type, for its cast */
static const char *
sql_type_name(Oid type)
{
	switch (type)
	{
		case TIMESTAMPTZOID:
			return "timestamptz";
		case TEXTOID:
			return "text";
		case INETOID:
			return "inet";
		case INT8OID:
			return "int8";
		case INT4OID:
			return "int4";
		case FLOAT8OID:
			return "float8";
		case BYTEAOID:
			return "bytea";
		case BOOLOID:
			return "bool";
		case TIDOID:
			return "tid";
	}
	elog(ERROR, "apicount: no SQL name for type %u", type);
	return NULL;				/* keep the compiler quiet */
}

void
flush_bind_array(Datum *values, bool *nulls, int n, Oid elemtype,
				 Datum *arg, Oid *argtype)
{
	int			dims[1] = {n};
	int			lbs[1] = {1};
	int16		typlen;
	bool		typbyval;
	char		typalign;

	get_typlenbyvalalign(elemtype, &typlen, &typbyval, &typalign);
	*arg = PointerGetDatum(construct_md_array(values, nulls, 1, dims, lbs,
											  elemtype, typlen, typbyval,
											  typalign));
	*argtype = get_array_type(elemtype);
}

void
column_set_init(ColumnSet *set, const RollupColumn *cols, int ncols, int skip)
{
	int			c;

	set->cols = cols;
	set->n = 0;
	for (c = 0; c < ncols; c++)
	{
		if (cols[c].flags & skip)
			continue;
		Assert(set->n < FLUSH_MAX_COLUMNS);
		set->idx[set->n++] = c;
	}
}

#define SET_COL(set, i)	(&(set)->cols[(set)->idx[i]])

void
column_names_sql(StringInfo buf, const ColumnSet *set)
{
	int			i;

	for (i = 0; i < set->n; i++)
		appendStringInfo(buf, "%s%s", i > 0 ? ", " : "", SET_COL(set, i)->name);
}

void
column_unnest_sql(StringInfo buf, const ColumnSet *set)
{
	int			i;

	for (i = 0; i < set->n; i++)
		column_unnest_param(buf, i + 1, SET_COL(set, i)->type, i > 0);
}

void
column_unnest_param(StringInfo buf, int param, Oid type, bool comma)
{
	appendStringInfo(buf, "%spg_catalog.unnest($%d::pg_catalog.%s[])",
					 comma ? ", " : "", param, sql_type_name(type));
}

/* the unique key: the MERGE_KEY columns */
static void
column_key_sql(StringInfo buf, const ColumnSet *set)
{
	int			i,
				k = 0;

	for (i = 0; i < set->n; i++)
		if (SET_COL(set, i)->merge == MERGE_KEY)
			appendStringInfo(buf, "%s%s", k++ > 0 ? ", " : "", SET_COL(set, i)->name);
}

void
column_merge_sql(StringInfo buf, const ColumnSet *set, const char *src)
{
	int			i,
				k = 0;

	for (i = 0; i < set->n; i++)
	{
		const char *x = SET_COL(set, i)->name;

		if (SET_COL(set, i)->merge == MERGE_KEY)
			continue;
		appendStringInfoString(buf, k++ > 0 ? ", " : " ");
		switch (SET_COL(set, i)->merge)
		{
			case MERGE_ADD:
				appendStringInfo(buf, "%s = t.%s OPERATOR(pg_catalog.+) %s.%s",
								 x, x, src, x);
				break;
			case MERGE_MIN:
				appendStringInfo(buf, "%s = LEAST(t.%s, %s.%s)", x, x, src, x);
				break;
			case MERGE_MAX:
				appendStringInfo(buf, "%s = GREATEST(t.%s, %s.%s)", x, x, src, x);
				break;
			case MERGE_OR:
				appendStringInfo(buf, "%s = t.%s OR %s.%s", x, x, src, x);
				break;
			case MERGE_HIST:
				appendStringInfo(buf, "%s = CASE WHEN %s.%s IS NULL THEN t.%s "
								 "ELSE apicount._latency_hist_add(t.%s, %s.%s) END",
								 x, src, x, x, x, src, x);
				break;
			case MERGE_KEY:
				break;
		}
	}
}

void
column_key_match_sql(StringInfo buf, const ColumnSet *set, const char *src)
{
	int			i;

	for (i = 0; i < set->n; i++)
	{
		const RollupColumn *col = SET_COL(set, i);

		if (col->merge != MERGE_KEY)
			continue;
		if (col->flags & COL_NULLABLE)
			appendStringInfo(buf, " AND (t.%s OPERATOR(pg_catalog.=) %s.%s "
							 "OR (t.%s IS NULL AND %s.%s IS NULL))",
							 col->name, src, col->name, col->name, src, col->name);
		else
			appendStringInfo(buf, " AND t.%s OPERATOR(pg_catalog.=) %s.%s",
							 col->name, src, col->name);
	}
}

char *
rollup_insert_sql(const char *table, const ColumnSet *set, bool upsert,
				  const char *returning)
{
	StringInfoData buf;

	initStringInfo(&buf);
	appendStringInfo(&buf, "INSERT INTO apicount.%s AS t (", table);
	column_names_sql(&buf, set);
	appendStringInfoString(&buf, ") SELECT ");
	column_unnest_sql(&buf, set);
	if (upsert)
	{
		appendStringInfoString(&buf, " ON CONFLICT (");
		column_key_sql(&buf, set);
		appendStringInfoString(&buf, ") DO UPDATE SET");
		column_merge_sql(&buf, set, "excluded");
	}
	if (returning != NULL)
		appendStringInfo(&buf, " RETURNING %s", returning);
	return buf.data;
}

void
column_bind(const ColumnSet *set, const void *const *rows, int n, void *cxt,
			Datum *args, Oid *types)
{
	Datum	   *values = palloc(sizeof(Datum) * Max(n, 1));
	bool	   *nulls = palloc(sizeof(bool) * Max(n, 1));
	int			i,
				r;

	for (i = 0; i < set->n; i++)
	{
		const RollupColumn *col = SET_COL(set, i);

		for (r = 0; r < n; r++)
		{
			nulls[r] = false;
			if (col->value != NULL)
				values[r] = col->value(rows[r], cxt, &nulls[r]);
			else
				values[r] = Int64GetDatum(*(const int64 *)
										  ((const char *) rows[r] + col->offset));
		}
		flush_bind_array(values, nulls, n, col->type, &args[i], &types[i]);
	}
	pfree(values);
	pfree(nulls);
}

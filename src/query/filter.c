/*-------------------------------------------------------------------------
 * filter.c
 *		Path and method filters of the live scans (see filter.h).
 *
 * A filter string is turned into the hash the string table keys it by;
 * a string the table does not hold (or holds under another text) can
 * match no live entry and is left out, so a filter of such strings
 * passes nothing.  Element NULLs match nothing, as in "path = ANY (...)".
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"

#include "counters.h"
#include "filter.h"
#include "normalize.h"
#include "strtab.h"

/* the hash of a string if the string table holds it, else 0 */
static uint64
held_hash(text *s)
{
	char		buf[APICOUNT_MAX_PATH + 1];
	int			len = VARSIZE_ANY_EXHDR(s);
	uint64		h;
	int			got;

	if (len > APICOUNT_MAX_PATH)
		return 0;
	h = apicount_hash_string(VARDATA_ANY(s), len);
	got = strtab_get(h, buf, sizeof(buf));
	if (got != len || memcmp(buf, VARDATA_ANY(s), len) != 0)
		return 0;
	return h;
}

static int
u64_cmp(const void *a, const void *b)
{
	uint64		x = *(const uint64 *) a;
	uint64		y = *(const uint64 *) b;

	return x < y ? -1 : x > y ? 1 : 0;
}

void
filter_from_args(FunctionCallInfo fcinfo, int argno, HashFilter *paths,
				 HashFilter *method)
{
	memset(paths, 0, sizeof(*paths));
	memset(method, 0, sizeof(*method));
	if (PG_NARGS() > argno && !PG_ARGISNULL(argno))
	{
		ArrayType  *arr = PG_GETARG_ARRAYTYPE_P(argno);
		Datum	   *elems;
		bool	   *enulls;
		int			nelems,
					i;

		if (ARR_ELEMTYPE(arr) != TEXTOID)
			elog(ERROR, "apicount: path filter must be text[]");
		deconstruct_array(arr, TEXTOID, -1, false, TYPALIGN_INT,
						  &elems, &enulls, &nelems);
		paths->active = true;
		paths->h = palloc(sizeof(uint64) * Max(nelems, 1));
		for (i = 0; i < nelems; i++)
		{
			uint64		h;

			if (enulls[i])
				continue;
			h = held_hash(DatumGetTextPP(elems[i]));
			if (h != 0)
				paths->h[paths->n++] = h;
		}
		qsort(paths->h, paths->n, sizeof(uint64), u64_cmp);
	}
	if (PG_NARGS() > argno + 1 && !PG_ARGISNULL(argno + 1))
	{
		uint64		h = held_hash(PG_GETARG_TEXT_PP(argno + 1));

		method->active = true;
		method->h = palloc(sizeof(uint64));
		if (h != 0)
			method->h[method->n++] = h;
	}
}

bool
filter_pass(const HashFilter *f, uint64 h)
{
	if (!f->active)
		return true;
	return bsearch(&h, f->h, f->n, sizeof(uint64), u64_cmp) != NULL;
}

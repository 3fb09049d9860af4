/*-------------------------------------------------------------------------
 * live.c
 *		Set-returning functions over shared memory: live entries, sliding
 *		windows, statistics.
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
#include "utils/timestamp.h"

#include "counters.h"
#include "entry_table.h"
#include "filter.h"
#include "groupagg.h"
#include "heavy.h"
#include "latency_store.h"
#include "normalize.h"
#include "preload.h"
#include "strtab.h"
#include "window.h"

PG_FUNCTION_INFO_V1(apicount_live_entries);
PG_FUNCTION_INFO_V1(apicount_live_groups);
PG_FUNCTION_INFO_V1(apicount_live_heavy);
PG_FUNCTION_INFO_V1(apicount_live_heavy_apis);
PG_FUNCTION_INFO_V1(apicount_live_minutes);
PG_FUNCTION_INFO_V1(apicount_stats);

typedef struct LiveRow
{
	CounterKey	key;
	CounterDelta d;				/* unflushed */
	uint64		calls;			/* all hits of the minute */
} LiveRow;

static bool
resolve(uint64 h, Datum *out)
{
	text	   *t = strtab_get_text(h);

	if (t == NULL)
		return false;
	*out = PointerGetDatum(t);
	return true;
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
	values[2] = nulls[2] ? (Datum) 0 : counters_key_inet(key);
	nulls[3] = key->user_h == 0;
	if (!nulls[3] && !resolve(key->user_h, &values[3]))
		return false;
	return true;
}

/*
 * calls, ok, client_errors, server_errors, latency_count, latency_sum_ms,
 * latency_max_ms (NULL without latencies) of a delta
 */
static void
delta_columns(const CounterDelta *d, Datum *values, bool *nulls)
{
	values[0] = Int64GetDatum(d->calls);
	values[1] = Int64GetDatum(d->ok);
	values[2] = Int64GetDatum(d->client_errors);
	values[3] = Int64GetDatum(d->server_errors);
	values[4] = Int64GetDatum(d->lat_count);
	values[5] = Float8GetDatum((double) d->lat_sum_ns / 1000000.0);
	nulls[6] = d->lat_count == 0;
	values[6] = Float8GetDatum((double) d->lat_max_ns / 1000000.0);
}

/* copy every entry's key, minute total and unflushed deltas */
static LiveRow *
collect(int *nrows)
{
	int			cap = 1024;
	int			n = 0;
	LiveRow    *rows = palloc_extended(cap * sizeof(LiveRow), MCXT_ALLOC_HUGE);
	uint32		cursor;
	CounterEntry *e;
	int			nslots = apicount_shared->nslots;

	counters_lock_all(LW_SHARED);
	cursor = 0;
	while ((e = etab_next(&cursor)) != NULL)
	{
		LiveRow		r;
		int			i;

		memset(&r, 0, sizeof(r));
		for (i = 0; i < nslots; i++)
			r.calls += pg_atomic_read_u32(entry_slot_calls(e, i));
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
	rows = collect(&n);
	for (i = 0; i < n; i++)
	{
		Datum		values[15];
		bool		nulls[15];
		LiveRow    *r = &rows[i];

		memset(nulls, 0, sizeof(nulls));
		values[0] = TimestampTzGetDatum(apicount_minute_start(r->key.minute));
		if (!key_columns(&r->key, values + 1, nulls + 1))
			continue;
		values[5] = BoolGetDatum((r->key.flags & KEY_TRACKED) != 0);
		values[6] = Int64GetDatum(r->calls);
		delta_columns(&r->d, values + 7, nulls + 7);
		values[14] = CStringGetTextDatum((r->key.flags & KEY_API) ? "api" :
										 "caller");
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	return (Datum) 0;
}

/* grouping dimensions of the live queries */
#define G_API		0x01
#define G_IP		0x02
#define G_USER		0x04
#define G_MINUTE	0x08
#define G_NET		0x10		/* the IP's network (heavy_mask_net) */

/* fingerprint buckets of the threshold prefilter */
#define PREFILTER_BUCKETS	65536

static void
group_key(const CounterKey *k, int dims, GroupKey *g)
{
	memset(g, 0, sizeof(GroupKey));
	if (dims & G_API)
	{
		g->method_h = k->method_h;
		g->path_h = k->path_h;
	}
	if (dims & (G_IP | G_NET))
	{
		g->ip_family = k->ip_family;
		g->ip_bits = k->ip_bits;
		memcpy(g->ip_addr, k->ip_addr, sizeof(g->ip_addr));
	}
	if ((dims & G_NET) && k->ip_family != 0)
	{
		CounterKey	net;

		memset(&net, 0, sizeof(net));
		net.ip_family = k->ip_family;
		memcpy(net.ip_addr, k->ip_addr, sizeof(net.ip_addr));
		heavy_mask_net(&net);
		g->ip_bits = net.ip_bits;
		memcpy(g->ip_addr, net.ip_addr, sizeof(g->ip_addr));
	}
	if (dims & G_USER)
		g->user_h = k->user_h;
	if (dims & G_MINUTE)
		g->minute = k->minute;
}

/*
 * Hash of a path filter, or 0 if no live entry can have that path (its
 * hash is absent, or belongs to another string).
 */
static uint64
path_filter_hash(text *path)
{
	char		buf[APICOUNT_MAX_PATH + 1];
	int			len = VARSIZE_ANY_EXHDR(path);
	uint64		h = apicount_hash_string(VARDATA_ANY(path), len);
	int			got = strtab_get(h, buf, sizeof(buf));

	if (got != len || memcmp(buf, VARDATA_ANY(path), len) != 0)
		return 0;
	return h;
}

/*
 * Output columns method, path, client_ip, user_id from a group key; user
 * (user_len bytes), if not NULL, is the user id when the string table
 * does not hold it.
 */
static bool
group_columns_user(const GroupKey *g, int dims, Datum *values, bool *nulls,
				   const char *user, int user_len);

static bool
group_columns(const GroupKey *g, int dims, Datum *values, bool *nulls)
{
	return group_columns_user(g, dims, values, nulls, NULL, 0);
}

static bool
group_columns_user(const GroupKey *g, int dims, Datum *values, bool *nulls,
				   const char *user, int user_len)
{
	CounterKey	k;

	memset(&k, 0, sizeof(k));
	k.ip_family = g->ip_family;
	k.ip_bits = g->ip_bits;
	memcpy(k.ip_addr, g->ip_addr, sizeof(k.ip_addr));
	nulls[0] = nulls[1] = true;
	if (dims & G_API)
	{
		if (!resolve(g->method_h, &values[0]) || !resolve(g->path_h, &values[1]))
			return false;
		nulls[0] = nulls[1] = false;
	}
	nulls[2] = !(dims & (G_IP | G_NET)) || g->ip_family == 0;
	values[2] = nulls[2] ? (Datum) 0 : counters_key_inet(&k);
	nulls[3] = !(dims & G_USER) || g->user_h == 0;
	if (!nulls[3] && !resolve(g->user_h, &values[3]))
	{
		if (user == NULL)
			return false;
		values[3] = PointerGetDatum(cstring_to_text_with_len(user, user_len));
	}
	return true;
}

/*
 * Does an entry take part in a _live_groups query?  A query of callers
 * (grouped by IP or user, or tracked_only) reads the caller tier, any
 * other the API tier (counters.h): each hit is in each tier at most once.
 */
static inline bool
entry_selected(const CounterKey *ck, int dims, uint64 path_h,
			   bool tracked_only, bool named_callers,
			   int32 min_minute, int32 max_minute)
{
	bool		of_callers = (dims & (G_IP | G_USER | G_NET)) || tracked_only ||
		named_callers;

	if (ck->minute < min_minute || ck->minute > max_minute)
		return false;
	if (path_h != 0 && ck->path_h != path_h)
		return false;
	if (of_callers != ((ck->flags & KEY_TRACKED) != 0))
		return false;
	if (!of_callers && !(ck->flags & KEY_API))
		return false;
	if (named_callers &&
		(ck->method_h == apicount_any_method_h ||
		 ((dims & (G_IP | G_NET)) && ck->ip_family == 0) ||
		 ((dims & G_USER) && ck->user_h == 0)))
		return false;
	return true;
}

/* the summary of heavy callers that groups callers as dims do, or -1 */
static int
heavy_dim_of(int dims)
{
	if (dims & G_NET)
		return HEAVY_NET;
	if ((dims & G_IP) && (dims & G_USER))
		return HEAVY_IP_USER;
	if (dims & G_IP)
		return HEAVY_IP;
	if (dims & G_USER)
		return HEAVY_USER;
	return -1;
}

/*
 * The global slots [first, cur] of a sliding window (window.c), which
 * must be longer than 0 and at most the live horizon.
 */
static void
window_of(const Interval *since, int64 *first, int64 *cur)
{
	int64		since_us = apicount_interval_usecs(since);

	if (since_us <= 0 || since_us > (int64) LIVE_HORIZON_SECS * USECS_PER_SEC)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("sliding window must be longer than 0 and at most %d seconds",
						LIVE_HORIZON_SECS)));
	apicount_window_slots(since_us, GetCurrentTransactionStartTimestamp(),
						  first, cur);
}

/* the slots [lo, hi) of a minute that lie in global slots [first, cur] */
static inline void
window_slots(int32 minute, int64 first, int64 cur, int nslots, int *lo, int *hi)
{
	int64		base = (int64) minute * nslots;

	*lo = (int) Min(Max(0, first - base), (int64) nslots);
	*hi = (int) Max(Min((int64) nslots, cur - base + 1), 0);
}

/* a summary counter's calls and errors in global slots [first, cur] */
static inline void
heavy_window_sums(const HeavyCounter *hc, int32 minute, int64 first,
				  int64 cur, int nslots, uint64 *calls, uint64 *errors)
{
	int			lo,
				hi,
				i;

	window_slots(minute, first, cur, nslots, &lo, &hi);
	*calls = 0;
	*errors = 0;
	for (i = lo; i < hi; i++)
	{
		*calls += hc->slot_calls[i];
		*errors += hc->slot_errors[i];
	}
}

/*
 * An entry's hits in global slots [first, cur]: calls, and errors and ok
 * when asked for (each is a separate run of the entry, see the layout rule
 * in counters.h, so a scan that needs only calls reads less memory).
 */
static inline void
window_sums(CounterEntry *e, int64 first, int64 cur, int nslots,
			uint64 *calls, uint64 *ok, uint64 *errors)
{
	int			lo,
				hi,
				i;

	window_slots(e->key.minute, first, cur, nslots, &lo, &hi);
	*calls = 0;
	for (i = lo; i < hi; i++)
		*calls += pg_atomic_read_u32(entry_slot_calls(e, i));
	if (errors)
	{
		*errors = 0;
		for (i = lo; i < hi; i++)
			*errors += pg_atomic_read_u32(entry_slot_errors(e, i));
	}
	if (ok)
	{
		*ok = 0;
		for (i = lo; i < hi; i++)
			*ok += pg_atomic_read_u32(entry_slot_ok(e, i));
	}
}

/*
 * apicount._live_groups(since interval, by_api bool, by_ip bool,
 *		by_user bool, path text, min_calls bigint, tracked_only bool,
 *		named_callers bool, with_ok bool, by_net bool)
 *
 * Hits in the last ceil(since / slot_seconds) slots up to the slot holding
 * now(), grouped in C by the chosen dimensions; groups under min_calls are
 * left out; ok is read (and returned) only with with_ok.  Each group also
 * carries the unflushed latency count and sum of the minutes the window
 * overlaps (the rollups hold the flushed part).  tracked_only keeps hits
 * recorded with track_callers on; named_callers also drops catch-all hits
 * and hits whose grouped caller fields are NULL (a hit without an IP is no
 * IP caller).  by_net groups IPs by their network (heavy_mask_net).
 *
 * Groups of callers also count the folded callers that the summaries of
 * heavy callers hold (heavy.h): a counter adds its exact calls in the
 * window plus its error, and when the groups include the API, a group
 * absent from a minute's summary adds that summary's minimum count, the
 * most its folded calls can be.  calls is never below the truth and above
 * it by at most calls_error (0 when every hit of the group had an entry).
 */

/* the summaries of heavy callers a window reads, one per minute */
typedef struct WindowHeavy
{
	int			n;
	HeavySnapshot *snaps[8];
	uint64		bound_sum;		/* of their minimum counts */
} WindowHeavy;

static void
window_heavy(WindowHeavy *wh, int hdim, int32 min_minute, int32 max_minute)
{
	int32		m;

	memset(wh, 0, sizeof(*wh));
	if (hdim < 0)
		return;
	for (m = min_minute; m <= max_minute && wh->n < lengthof(wh->snaps); m++)
	{
		HeavySnapshot *snap = heavy_snapshot(hdim, m);

		if (snap == NULL)
			continue;
		wh->bound_sum += snap->min_count;
		wh->snaps[wh->n++] = snap;
	}
}

/* does a summary counter take part in the query (as entry_selected)? */
static inline bool
heavy_selected(const HeavyCounter *hc, int dims, uint64 path_h,
			   bool named_callers)
{
	if (path_h != 0 && hc->key.path_h != path_h)
		return false;
	if (named_callers &&
		(hc->key.method_h == apicount_any_method_h ||
		 ((dims & (G_IP | G_NET)) && hc->key.ip_family == 0) ||
		 ((dims & G_USER) && hc->key.user_h == 0)))
		return false;
	return true;
}

/*
 * A walk over the counters of a window's summaries that take part in a
 * query (heavy_selected), each with its calls and errors in the window and
 * its group.  Set the fields up to nslots; h and i start at 0.
 */
typedef struct HeavyWalk
{
	const WindowHeavy *wh;
	int			dims;			/* the query's groups */
	uint64		path_h;			/* 0: any path */
	bool		named_callers;
	int64		first,			/* the window's global slots */
				cur;
	int			nslots;
	int			h,				/* the cursor: wh->snaps[h]->counters[i] */
				i;
} HeavyWalk;

/* one counter of the walk */
typedef struct HeavyPart
{
	const HeavyCounter *hc;
	int			h;				/* its summary: wh->snaps[h] */
	uint64		calls;			/* in the window */
	uint64		errors;
	GroupKey	gk;
	uint64		fp;				/* groupkey_fingerprint(&gk) | 1 */
} HeavyPart;

static bool
heavy_walk_next(HeavyWalk *w, HeavyPart *p)
{
	while (w->h < w->wh->n)
	{
		const HeavySnapshot *snap = w->wh->snaps[w->h];
		const HeavyCounter *hc;

		if (w->i >= snap->n)
		{
			w->h++;
			w->i = 0;
			continue;
		}
		hc = &snap->counters[w->i++];
		if (!heavy_selected(hc, w->dims, w->path_h, w->named_callers))
			continue;
		p->hc = hc;
		p->h = w->h;
		heavy_window_sums(hc, snap->minute, w->first, w->cur, w->nslots,
						  &p->calls, &p->errors);
		group_key(&hc->key, w->dims, &p->gk);
		p->fp = groupkey_fingerprint(&p->gk) | 1;
		return true;
	}
	return false;
}

Datum
apicount_live_groups(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	Interval   *since;
	int			dims = 0;
	uint64		path_h = 0;
	int64		min_calls;
	bool		tracked_only;
	bool		named_callers;
	bool		with_ok;
	int64		cur,
				first;
	int			nslots;
	int32		min_minute;
	GroupAgg   *agg;
	uint32		cursor;
	CounterEntry *e;
	GroupRow   *g;
	uint64	   *bucket = NULL;
	uint64	   *entry_fp = NULL;
	CounterEntry **entry_ptr = NULL;
	int			nselected = 0;
	int			i;
	WindowHeavy wh;
	int			h;
	bool		full_key_groups;
	GroupAgg   *folded_apis;
	HeavyWalk	walk;
	HeavyPart	part;

	apicount_require_preload();
	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("since must not be null")));
	since = PG_GETARG_INTERVAL_P(0);
	if (PG_GETARG_BOOL(1))
		dims |= G_API;
	if (PG_GETARG_BOOL(2))
		dims |= G_IP;
	if (PG_GETARG_BOOL(3))
		dims |= G_USER;
	min_calls = PG_ARGISNULL(5) ? 1 : PG_GETARG_INT64(5);
	tracked_only = PG_GETARG_BOOL(6);
	named_callers = PG_GETARG_BOOL(7);
	with_ok = PG_GETARG_BOOL(8);
	if (PG_NARGS() > 9 && !PG_ARGISNULL(9) && PG_GETARG_BOOL(9))
		dims = (dims & ~G_IP) | G_NET;

	nslots = apicount_shared->nslots;
	window_of(since, &first, &cur);
	min_minute = (int32) (first / nslots);

	InitMaterializedSRF(fcinfo, 0);
	if (!PG_ARGISNULL(4))
	{
		path_h = path_filter_hash(PG_GETARG_TEXT_PP(4));
		if (path_h == 0)
			return (Datum) 0;
	}

	/* the summaries first: never under the partition locks (heavy.h) */
	window_heavy(&wh, heavy_dim_of(dims), min_minute, (int32) (cur / nslots));
	walk = (HeavyWalk) {&wh, dims, path_h, named_callers, first, cur, nslots};
	full_key_groups = (dims & (G_API | G_IP | G_USER | G_NET)) ==
		(G_API | G_IP | G_USER);

	counters_lock_all(LW_SHARED);

	/*
	 * With a threshold, a first pass adds each entry's window calls to a
	 * bucket of its group's fingerprint: a group can reach the threshold
	 * only if its bucket does, so most entries are never grouped.  Entry
	 * pointers stay valid while the partition locks are held (only the
	 * worker removes entries, under exclusive locks).  Summary counters
	 * add their upper bounds, and each entry of a query by API the bounds
	 * its group may get for being absent from a summary.
	 */
	if (min_calls > 1)
	{
		int			n = 0;

		Size		max_entries = etab_count() + 1024;
		uint64		absent = (dims & G_API) ? wh.bound_sum : 0;

		bucket = palloc0(sizeof(uint64) * PREFILTER_BUCKETS);
		entry_fp = palloc_extended(sizeof(uint64) * max_entries, MCXT_ALLOC_HUGE);
		entry_ptr = palloc_extended(sizeof(CounterEntry *) * max_entries,
									MCXT_ALLOC_HUGE);
		cursor = 0;
		while ((e = etab_next(&cursor)) != NULL)
		{
			uint64		calls = 0;
			GroupKey	gk;

			if (entry_selected(&e->key, dims, path_h, tracked_only,
							   named_callers, min_minute, cur / nslots) &&
				(window_sums(e, first, cur, nslots, &calls, NULL, NULL),
				 calls > 0))
			{
				group_key(&e->key, dims, &gk);
				entry_fp[n] = groupkey_fingerprint(&gk) | 1;
				entry_ptr[n] = e;
				bucket[entry_fp[n] % PREFILTER_BUCKETS] += calls + absent;
				n++;
			}
		}
		nselected = n;
		while (heavy_walk_next(&walk, &part))
			bucket[part.fp % PREFILTER_BUCKETS] += part.calls + part.hc->error;
		walk.h = walk.i = 0;
	}

	/*
	 * Second pass: the entries kept by the prefilter, or (no threshold)
	 * the whole table.
	 */
	agg = groupagg_create(1024);
	i = 0;
	cursor = 0;
	for (;;)
	{
		uint64		calls = 0,
					ok = 0,
					errors = 0;
		uint32		lat_count;
		GroupKey	gk;

		if (entry_fp != NULL)
		{
			if (i >= nselected)
				break;
			e = entry_ptr[i];
			if (bucket[entry_fp[i++] % PREFILTER_BUCKETS] < (uint64) min_calls)
				continue;
		}
		else
		{
			if ((e = etab_next(&cursor)) == NULL)
				break;
			if (!entry_selected(&e->key, dims, path_h, tracked_only,
								named_callers, min_minute, cur / nslots))
				continue;
		}
		window_sums(e, first, cur, nslots, &calls, with_ok ? &ok : NULL,
					&errors);
		lat_count = pg_atomic_read_u32(&e->lat_count);
		if (calls == 0 && lat_count == 0)
			continue;
		group_key(&e->key, dims, &gk);
		g = groupagg_get(agg, &gk, groupkey_fingerprint(&gk) | 1);
		g->calls += calls;
		g->ok += ok;
		g->errors += errors;
		if (full_key_groups && !entry_tail(e)->late)
		{
			for (h = 0; h < wh.n; h++)
				if (wh.snaps[h]->minute == e->key.minute)
					g->clean |= 1u << h;
		}
		/* unflushed latency of the minutes the window overlaps */
		g->d.lat_count += lat_count;
		g->d.lat_sum_ns += pg_atomic_read_u64(&e->lat_sum_ns);
	}
	/*
	 * With bounds to add, the APIs of the window's minutes that had folded
	 * callers (CounterTail.late of API entries): only their callers can
	 * have folded calls that a summary no longer holds.
	 */
	folded_apis = NULL;
	if ((dims & G_API) && wh.bound_sum > 0)
	{
		folded_apis = groupagg_create(64);
		cursor = 0;
		while ((e = etab_next(&cursor)) != NULL)
		{
			GroupKey	gk;

			if (!(e->key.flags & KEY_API) || !entry_tail(e)->late ||
				e->key.minute < min_minute || e->key.minute > cur / nslots)
				continue;
			group_key(&e->key, G_API | G_MINUTE, &gk);
			(void) groupagg_get(folded_apis, &gk, groupkey_fingerprint(&gk));
		}
	}
	counters_unlock_all();

	/* the folded callers of the summaries */
	while (heavy_walk_next(&walk, &part))
	{
		if (part.calls == 0 && part.hc->error == 0)
			continue;
		if (bucket != NULL &&
			bucket[part.fp % PREFILTER_BUCKETS] < (uint64) min_calls)
			continue;
		g = groupagg_get(agg, &part.gk, part.fp);
		g->calls += part.calls + part.hc->error;
		g->errors += part.errors;
		g->calls_error += part.hc->error;
		g->heavy_seen |= 1u << part.h;
		if (part.gk.user_h != 0)
		{
			g->user = part.hc->user;
			g->user_len = part.hc->user_len;
		}
	}

	/*
	 * A group of one API absent from a minute's summary folded at most that
	 * summary's minimum count in that minute; nothing, if it is one caller
	 * key whose entry of that minute was made before the summary first
	 * evicted (a fold before the entry would still be in the summary).
	 * Across APIs the bound is per API, so groups without the API get no
	 * such term.
	 */
	if ((dims & G_API) && wh.bound_sum > 0)
	{
		for (i = 0; i < agg->nrows; i++)
		{
			g = &agg->rows[i];
			for (h = 0; h < wh.n; h++)
			{
				GroupKey	ak;

				if (((g->heavy_seen | g->clean) & (1u << h)) ||
					wh.snaps[h]->min_count == 0)
					continue;
				memset(&ak, 0, sizeof(ak));
				ak.method_h = g->key.method_h;
				ak.path_h = g->key.path_h;
				ak.minute = wh.snaps[h]->minute;
				if (!groupagg_find(folded_apis, &ak, groupkey_fingerprint(&ak)))
					continue;
				g->calls += wh.snaps[h]->min_count;
				g->calls_error += wh.snaps[h]->min_count;
			}
		}
	}

	for (i = 0; i < agg->nrows; i++)
	{
		Datum		values[10];
		bool		nulls[10];

		g = &agg->rows[i];
		if ((int64) g->calls < min_calls || g->calls == 0)
			continue;
		memset(nulls, 0, sizeof(nulls));
		if (!group_columns_user(&g->key, dims, values, nulls, g->user,
								g->user_len))
			continue;
		values[4] = Int64GetDatum(g->calls);
		values[5] = Int64GetDatum(g->ok);
		nulls[5] = !with_ok;
		values[6] = Int64GetDatum(g->errors);
		values[7] = Int64GetDatum(g->d.lat_count);
		values[8] = Float8GetDatum((double) g->d.lat_sum_ns / 1000000.0);
		values[9] = Int64GetDatum(g->calls_error);
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	return (Datum) 0;
}

/*
 * apicount._live_heavy(from_bucket timestamptz, to_ts timestamptz,
 *		grouping text)
 *
 * The live summaries of heavy callers (heavy.h) of the minutes in
 * [from_bucket, to_ts) for one grouping ('ip_user', 'ip', 'user', 'net',
 * or 'api': the APIs folded into their method's "(other)" path):
 * a row per counter (calls = its count, an upper bound; calls_error), and
 * per minute one row with NULL method: calls = the folded calls the
 * summary counted, calls_error = the bound of a caller absent from it.
 * The worker writes the same rows to caller_heavy_minute and
 * heavy_minute_bounds once the minute is past the live horizon.
 */
Datum
apicount_live_heavy(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	TimestampTz from_ts = PG_GETARG_TIMESTAMPTZ(0);
	TimestampTz to_ts = PG_GETARG_TIMESTAMPTZ(1);
	char	   *grouping = text_to_cstring(PG_GETARG_TEXT_PP(2));
	int			hdim = -1;
	int32		now_minute = apicount_minute_of(GetCurrentTimestamp());
	int32		from_minute,
				to_minute,
				m;
	int			d,
				i;

	apicount_require_preload();
	for (d = 0; d < HEAVY_NDIMS; d++)
		if (strcmp(grouping, heavy_dim_names[d]) == 0)
			hdim = d;
	if (hdim < 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid grouping \"%s\"", grouping),
				 errhint("Use 'ip_user', 'ip', 'user', 'net' or 'api'.")));
	InitMaterializedSRF(fcinfo, 0);
	from_minute = Max(apicount_minute_at_or_after(from_ts), now_minute - HEAVY_RING);
	to_minute = Min(apicount_minute_before(to_ts), now_minute + HEAVY_RING);
	for (m = from_minute; m <= to_minute; m++)
	{
		HeavySnapshot *snap = heavy_snapshot(hdim, m);
		Datum		values[8];
		bool		nulls[8];

		if (snap == NULL || snap->folded == 0)
			continue;
		values[0] = TimestampTzGetDatum(apicount_minute_start(m));
		for (i = 0; i < snap->n; i++)
		{
			HeavyCounter *hc = &snap->counters[i];

			memset(nulls, 0, sizeof(nulls));
			if (hdim == HEAVY_API)
			{
				/* a folded API has no string-table entry: its own text */
				values[1] = PointerGetDatum(cstring_to_text_with_len(hc->method,
																	 hc->method_len));
				values[2] = PointerGetDatum(cstring_to_text_with_len(hc->path,
																	 hc->path_len));
			}
			else if (!resolve(hc->key.method_h, &values[1]) ||
					 !resolve(hc->key.path_h, &values[2]))
				continue;
			nulls[3] = hc->key.ip_family == 0;
			values[3] = nulls[3] ? (Datum) 0 : counters_key_inet(&hc->key);
			nulls[4] = hc->key.user_h == 0;
			values[4] = nulls[4] ? (Datum) 0 :
				PointerGetDatum(cstring_to_text_with_len(hc->user, hc->user_len));
			values[5] = Int64GetDatum((int64) hc->count);
			values[6] = Int64GetDatum((int64) hc->error);
			values[7] = Int64GetDatum((int64) heavy_counter_errors(hc));
			tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
		}
		memset(nulls, 0, sizeof(nulls));
		nulls[1] = nulls[2] = nulls[3] = nulls[4] = nulls[7] = true;
		values[5] = Int64GetDatum((int64) snap->folded);
		values[6] = Int64GetDatum((int64) snap->min_count);
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	return (Datum) 0;
}

/*
 * apicount._live_heavy_apis(since interval)
 *
 * The APIs folded into "(other)" that the summaries of the sliding
 * window's minutes name (heavy.h, HEAVY_API), one row per API: calls is
 * each counter's exact calls in the window plus its error, and for each
 * minute whose summary lacks the API, that summary's minimum count (the
 * most the API can have folded there); calls - calls_error <= truth <=
 * calls.  errors counts the errors in the window since the counters were
 * taken (a lower bound).  A last row with NULL method and path carries the
 * sum of those minimum counts: what an API that no summary names may have
 * folded in the window, besides the calls of its own entries.
 */
Datum
apicount_live_heavy_apis(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	int64		first,
				cur;
	int			nslots;
	WindowHeavy wh;
	HeavyWalk	walk;
	HeavyPart	part;
	GroupAgg   *agg;
	GroupRow   *g;
	int			h,
				i;

	apicount_require_preload();
	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("since must not be null")));
	nslots = apicount_shared->nslots;
	window_of(PG_GETARG_INTERVAL_P(0), &first, &cur);
	InitMaterializedSRF(fcinfo, 0);
	window_heavy(&wh, HEAVY_API, (int32) (first / nslots), (int32) (cur / nslots));
	agg = groupagg_create(64);
	walk = (HeavyWalk) {&wh, G_API, 0, false, first, cur, nslots};
	while (heavy_walk_next(&walk, &part))
	{
		g = groupagg_get(agg, &part.gk, part.fp);
		if (g->api_counter == NULL)
			g->api_counter = part.hc;
		g->calls += part.calls + part.hc->error;
		g->errors += part.errors;
		g->calls_error += part.hc->error;
		g->heavy_seen |= 1u << part.h;
	}
	for (i = 0; i < agg->nrows; i++)
	{
		const HeavyCounter *hc;
		Datum		values[5];
		bool		nulls[5] = {false, false, false, false, false};

		g = &agg->rows[i];
		for (h = 0; h < wh.n; h++)
		{
			if (g->heavy_seen & (1u << h))
				continue;
			g->calls += wh.snaps[h]->min_count;
			g->calls_error += wh.snaps[h]->min_count;
		}
		if (g->calls == 0)
			continue;
		hc = (const HeavyCounter *) g->api_counter;
		values[0] = PointerGetDatum(cstring_to_text_with_len(hc->method, hc->method_len));
		values[1] = PointerGetDatum(cstring_to_text_with_len(hc->path, hc->path_len));
		values[2] = Int64GetDatum(g->calls);
		values[3] = Int64GetDatum(g->calls_error);
		values[4] = Int64GetDatum(g->errors);
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	if (wh.bound_sum > 0)
	{
		/* what an API no summary names may have folded in the window */
		Datum		values[5];
		bool		nulls[5] = {true, true, false, false, false};

		values[2] = values[3] = Int64GetDatum((int64) wh.bound_sum);
		values[4] = Int64GetDatum(0);
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	return (Datum) 0;
}

/*
 * apicount._live_minutes(from_bucket timestamptz, to_ts timestamptz,
 *		by_caller bool [, paths text[], method text])
 *
 * Unflushed deltas of the minutes in [from_bucket, to_ts), per API and
 * minute (the API tier), or when by_caller per caller entry plus each
 * API's "(other callers)" row (NULL client_ip, user_id OTHER_CALLERS), as
 * the flush writes them to caller_minute, folded_before included.
 * From 0.4 on, only entries of the given paths and method (each filter
 * NULL: any), tested on the entry's hashes during the scan.
 */
Datum
apicount_live_minutes(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	TimestampTz from_ts;
	TimestampTz to_ts;
	bool		by_caller;
	int			dims;
	HashFilter	fpaths,
				fmethod;
	int32		from_minute,
				to_minute;
	GroupAgg   *agg;
	uint32		cursor;
	CounterEntry *e;
	GroupRow   *g;
	int			i;

	apicount_require_preload();
	InitMaterializedSRF(fcinfo, 0);
	/* from 0.4 on the function is not strict (its filters may be NULL) */
	if (PG_ARGISNULL(0) || PG_ARGISNULL(1) || PG_ARGISNULL(2))
		return (Datum) 0;
	from_ts = PG_GETARG_TIMESTAMPTZ(0);
	to_ts = PG_GETARG_TIMESTAMPTZ(1);
	by_caller = PG_GETARG_BOOL(2);
	dims = G_API | G_MINUTE | (by_caller ? G_IP | G_USER : 0);
	filter_from_args(fcinfo, 3, &fpaths, &fmethod);
	/* buckets starting in [from_ts, to_ts) */
	from_minute = apicount_minute_at_or_after(from_ts);
	to_minute = apicount_minute_before(to_ts);

	agg = groupagg_create(1024);
	counters_lock_all(LW_SHARED);
	cursor = 0;
	while ((e = etab_next(&cursor)) != NULL)
	{
		CounterDelta d;
		GroupKey	gk;

		if (e->key.minute < from_minute || e->key.minute > to_minute)
			continue;
		if (!filter_pass(&fpaths, e->key.path_h) ||
			!filter_pass(&fmethod, e->key.method_h))
			continue;
		if (by_caller && (e->key.flags & KEY_API))
		{
			CounterOther o;

			counters_read_other(e, &o);
			if (o.calls == 0)
				continue;
			memset(&d, 0, sizeof(d));
			d.calls = o.calls;
			d.ok = o.ok;
			d.client_errors = o.client_errors;
			d.server_errors = o.server_errors;
			group_key(&e->key, dims, &gk);
			gk.user_h = apicount_other_callers_h;
		}
		else
		{
			if (!(e->key.flags & KEY_API) != by_caller)
				continue;
			counters_read_delta(e, &d);
			if (d.calls == 0 && d.lat_count == 0)
				continue;
			group_key(&e->key, dims, &gk);
			if (by_caller && entry_tail(e)->late)
				groupagg_get(agg, &gk, groupkey_fingerprint(&gk))->folded_before = true;
		}
		g = groupagg_get(agg, &gk, groupkey_fingerprint(&gk));
		g->d.calls += d.calls;
		g->d.ok += d.ok;
		g->d.client_errors += d.client_errors;
		g->d.server_errors += d.server_errors;
		g->d.lat_count += d.lat_count;
		g->d.lat_sum_ns += d.lat_sum_ns;
		g->d.lat_max_ns = Max(g->d.lat_max_ns, d.lat_max_ns);
	}
	counters_unlock_all();

	for (i = 0; i < agg->nrows; i++)
	{
		Datum		values[13];
		bool		nulls[13];

		g = &agg->rows[i];
		memset(nulls, 0, sizeof(nulls));
		values[0] = TimestampTzGetDatum(apicount_minute_start(g->key.minute));
		values[12] = BoolGetDatum(g->folded_before);
		if (!group_columns(&g->key, dims, values + 1, nulls + 1))
			continue;
		delta_columns(&g->d, values + 5, nulls + 5);
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	return (Datum) 0;
}

Datum
apicount_stats(PG_FUNCTION_ARGS)
{
	TupleDesc	tupdesc;
	Datum		values[29];
	bool		nulls[29];
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
							  pg_atomic_read_u32(&s->api_entries) +
							  pg_atomic_read_u32(&s->overflow_entries) +
							  pg_atomic_read_u32(&s->audited_entries));
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
	values[11] = Int64GetDatum(latstore_pages_used());
	values[12] = Int64GetDatum(latstore_pages_capacity());
	values[13] = Int64GetDatum((int64) latstore_unbinned());
	values[14] = Int64GetDatum(pg_atomic_read_u64(&s->caller_rows_inserted));
	values[15] = Int64GetDatum(pg_atomic_read_u64(&s->caller_rows_updated));
	values[16] = Int64GetDatum(pg_atomic_read_u64(&s->caller_rows_upserted));
	values[17] = Int64GetDatum(strtab_count());
	values[18] = Int64GetDatum(strtab_capacity());
	/* the tiers (counters.h) */
	values[19] = Int64GetDatum(s->api_capacity);
	values[20] = Int64GetDatum((int64) pg_atomic_read_u32(&s->api_entries));
	values[21] = Int64GetDatum((int64) pg_atomic_read_u32(&s->normal_entries));
	values[22] = Int64GetDatum(pg_atomic_read_u64(&s->folded_calls));
	values[23] = Int64GetDatum(pg_atomic_read_u64(&s->folded_unsummarized));
	values[24] = Int64GetDatum(heavy_capacity());
	/* the current minute's bound for callers absent from its summaries */
	values[25] = Int64GetDatum((int64) heavy_bound(apicount_minute_of(GetCurrentTimestamp())));
	values[26] = Int64GetDatum(s->audited_capacity);
	values[27] = Int64GetDatum((int64) pg_atomic_read_u32(&s->audited_entries));
	values[28] = Int64GetDatum(pg_atomic_read_u64(&s->audited_folded));

	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(tupdesc, values, nulls)));
}

/*-------------------------------------------------------------------------
 * ingest.c
 *		Rows of apicount.requests (from its table access method) and hit().
 *
 * Owns validation and the mapping from SQL values to a pending hit: datums
 * in, PendingHit out.  Every check of a row happens before anything of it
 * is recorded, so a row either counts whole or raises an error; the rows
 * the statement recorded before it are dropped with its (sub)transaction.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <math.h>

#include "access/htup_details.h"
#include "access/xact.h"
#include "executor/tuptable.h"
#include "mb/pg_wchar.h"
#include "utils/builtins.h"
#include "utils/memutils.h"
#include <sys/socket.h>

#include "utils/inet.h"

#include "compat.h"
#include "counters.h"
#include "guc.h"
#include "ingest.h"
#include "audited.h"
#include "normalize.h"
#include "pending.h"
#include "preload.h"
#include "requests_slot.h"
#include "string_memo.h"

PG_FUNCTION_INFO_V1(apicount_hit);
PG_FUNCTION_INFO_V1(apicount_normalize_path_sql);

#define FUTURE_LIMIT_USECS		(5 * USECS_PER_MINUTE)
#define MAX_LATENCY_MS			86400000.0	/* one day */
#define STACK_PATH_BYTES		2048

/* column order: ts, method, path, client_ip, user_id, status, latency_ms */
#define REQ_NATTS 7

static int
normalize_or_error(const char *in, int len, char *out)
{
	size_t		outlen;
	NormResult	r;

	r = apicount_normalize_path(in, len, apicount_normalize_paths, out,
								&outlen);
	if (r == NORM_EMPTY)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("request path must not be empty"),
				 apicount_normalize_paths ?
				 errdetail("The path is empty once its query string and fragment are removed.") : 0));
	if (r == NORM_CONTROL_CHAR)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("request path must not contain control characters")));
	return (int) outlen;
}

/*
 * A text (or inet) datum of a slot, detoasted if need be: what
 * DatumGetTextPP gives, without a function call for the plain value a
 * row almost always holds.
 */
static inline text *
plain_varlena(Datum d)
{
	struct varlena *p = (struct varlena *) DatumGetPointer(d);

	if (unlikely(VARATT_IS_EXTERNAL(p) || VARATT_IS_COMPRESSED(p)))
		return pg_detoast_datum_packed(p);
	return p;
}

/*
 * Where normalized paths go: a buffer carved from the front (a batch's
 * chunk, or one row's stack buffer); a path that does not fit gets a
 * chunk of its own, palloc'd in the current memory context.
 */
typedef struct PathSpace
{
	char	   *next;
	Size		left;
} PathSpace;

#define PATH_CHUNK_BYTES	(64 * 1024)

static char *
path_space_take(PathSpace *space, Size need)
{
	char	   *p;

	if (space->left < need)
	{
		if (need > PATH_CHUNK_BYTES / 16)
			return palloc(need);
		space->next = palloc(PATH_CHUNK_BYTES);
		space->left = PATH_CHUNK_BYTES;
	}
	p = space->next;
	space->next += need;
	space->left -= need;
	return p;
}

/* give back the end of the last piece taken, of which only used bytes are */
static void
path_space_trim(PathSpace *space, char *p, Size taken, Size used)
{
	if (p + taken == space->next)
	{
		space->next = p + used;
		space->left += taken - used;
	}
}

/*
 * The normalized path of a request and its hash, from the memo when the
 * same bytes were seen lately, else normalized (and clipped) into space.
 */
static void
prepare_path(const text *raw, PathSpace *space, PendingHit *hit)
{
	const char *in = VARDATA_ANY(raw);
	int			len = VARSIZE_ANY_EXHDR(raw);
	MemoHit		memo;
	char	   *path;
	int			path_len;

	if (memo_path(in, len, apicount_normalize_paths, &memo))
	{
		path = path_space_take(space, memo.norm_len + 1);
		memcpy(path, memo.norm, memo.norm_len);
		path[memo.norm_len] = '\0';
		hit->path = path;
		hit->path_len = memo.norm_len;
		hit->key.path_h = memo.hash;
		return;
	}
	path = path_space_take(space, 3 * (Size) len + 4);
	path_len = normalize_or_error(in, len, path);
	path_space_trim(space, path, 3 * (Size) len + 4, path_len + 1);
	if (path_len > APICOUNT_MAX_PATH)
	{
		path_len = pg_mbcliplen(path, path_len, APICOUNT_MAX_PATH);
		hit->truncated++;
	}
	hit->path = path;
	hit->path_len = path_len;
	hit->key.path_h = apicount_hash_string(path, path_len);
	if (hit->truncated == 0)
		memo_remember_path(in, len, apicount_normalize_paths, path, path_len,
						   hit->key.path_h);
}

/* the normalized method of a request (GET if null) and its hash */
static void
prepare_method(const text *raw, PendingHit *hit)
{
	const char *in = raw == NULL ? "GET" : VARDATA_ANY(raw);
	int			len = raw == NULL ? 3 : VARSIZE_ANY_EXHDR(raw);
	MemoHit		memo;
	size_t		method_len;
	NormResult	r;

	if (memo_method(in, len, &memo))
	{
		memcpy(hit->method_buf, memo.norm, memo.norm_len);
		hit->method_buf[memo.norm_len] = '\0';
		hit->method_len = memo.norm_len;
		hit->key.method_h = memo.hash;
		return;
	}
	r = apicount_normalize_method(in, len, hit->method_buf, &method_len);
	if (r != NORM_OK)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid HTTP method \"%s\"", text_to_cstring(raw)),
				 errdetail("A method is an HTTP token (letters, digits and !#$%%&'*+-.^_`|~) of 1 to %d characters.",
						   APICOUNT_MAX_METHOD)));
	hit->method_len = (int) method_len;
	hit->key.method_h = apicount_hash_string(hit->method_buf, method_len);
	memo_remember_method(in, len, hit->method_buf, hit->method_len,
						 hit->key.method_h);
}

/* what prepare_hit starts a hit from */
static const PendingHit zero_hit;

/*
 * Store the key's last three words (minute, flags, IP family and bits; the
 * IP address) whole.  pending_prepare hashes the key word by word right
 * after: a word assembled from narrower stores cannot be forwarded from
 * the store buffer, and its load waits for them to reach the cache.
 */
StaticAssertDecl(offsetof(CounterKey, minute) == 24 &&
				 offsetof(CounterKey, flags) == 28 &&
				 offsetof(CounterKey, ip_family) == 29 &&
				 offsetof(CounterKey, ip_bits) == 30 &&
				 offsetof(CounterKey, ip_addr) == 32 &&
				 sizeof(CounterKey) == 48,
				 "set_key_tail assumes the layout of CounterKey");

static inline void
set_key_tail(CounterKey *key, int32 minute, uint8 flags, const inet *ip)
{
#ifndef WORDS_BIGENDIAN
	char	   *tail = (char *) &key->minute;
	uint64		w0 = (uint64) (uint32) minute | (uint64) flags << 32;
	uint64		w1 = 0;
	uint64		w2 = 0;

	if (ip != NULL)
	{
		w0 |= (uint64) ip_family(ip) << 40 | (uint64) ip_bits(ip) << 48;
		if (ip_addrsize(ip) == 4)
		{
			uint32		v4;

			memcpy(&v4, ip_addr(ip), 4);
			w1 = v4;
		}
		else
		{
			memcpy(&w1, ip_addr(ip), 8);
			memcpy(&w2, ip_addr(ip) + 8, 8);
		}
	}
	/* three 8-byte stores (a wider copy through the stack would stall too) */
	memcpy(tail, &w0, 8);
	memcpy(tail + 8, &w1, 8);
	memcpy(tail + 16, &w2, 8);
#else
	key->minute = minute;
	key->flags = flags;
	if (ip != NULL)
	{
		key->ip_family = ip_family(ip);
		key->ip_bits = ip_bits(ip);
		memcpy(key->ip_addr, ip_addr(ip), ip_addrsize(ip));
	}
#endif
}

/*
 * Validate and normalize one request into *hit (its key hashed, ready for
 * pending_add).  The normalized path goes to space.  Throws on bad input,
 * having recorded nothing.  The caller has checked apicount_require_preload.
 */
static void
prepare_hit(const RequestValues *req, PendingHit *hit, PathSpace *space)
{
	const char *user = NULL;
	int			user_len = 0;
	TimestampTz now = GetCurrentStatementStartTimestamp();
	TimestampTz ts;

	/* not memset: a 120-byte memset becomes "rep stos", slow to start */
	memcpy(hit, &zero_hit, offsetof(PendingHit, method_buf));

	/* path */
	if (req->path == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("request path must not be null")));
	prepare_path(req->path, space, hit);

	/* method */
	prepare_method(req->method, hit);
	hit->audited = audited_path(hit->key.path_h, hit->path, hit->path_len);

	/* user id */
	if (req->user_id != NULL)
	{
		user = VARDATA_ANY(req->user_id);
		user_len = VARSIZE_ANY_EXHDR(req->user_id);
		if (apicount_check_text(user, user_len) != NORM_OK)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("user id must not contain control characters")));
		if (user_len > APICOUNT_MAX_USER)
		{
			user_len = pg_mbcliplen(user, user_len, APICOUNT_MAX_USER);
			if (apicount_track_callers)
				hit->truncated++;	/* counted only if the user id is stored */
		}
	}

	/* status */
	if (req->has_status && (req->status < 100 || req->status > 599))
		ereport(ERROR,
				(errcode(ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE),
				 errmsg("HTTP status %d is out of range", req->status),
				 errdetail("A status must be between 100 and 599, or null.")));

	/* latency */
	if (req->has_latency &&
		(isnan(req->latency_ms) || req->latency_ms < 0 ||
		 req->latency_ms > MAX_LATENCY_MS))
		ereport(ERROR,
				(errcode(ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE),
				 errmsg("latency_ms %g is out of range", req->latency_ms),
				 errdetail("A latency must be a finite number of milliseconds between 0 and %.0f, or null.",
						   MAX_LATENCY_MS)));

	/* timestamp */
	ts = req->has_ts ? req->ts : now;
	if (TIMESTAMP_NOT_FINITE(ts) || ts > now + FUTURE_LIMIT_USECS)
		ereport(ERROR,
				(errcode(ERRCODE_DATETIME_FIELD_OVERFLOW),
				 errmsg("request timestamp %s is too far in the future",
						timestamptz_to_str(ts)),
				 errdetail("Timestamps may be at most 5 minutes ahead of the statement's start.")));
	if (ts < now - apicount_retention_secs * USECS_PER_SEC)
		ereport(ERROR,
				(errcode(ERRCODE_DATETIME_FIELD_OVERFLOW),
				 errmsg("request timestamp %s is older than the retention period",
						timestamptz_to_str(ts)),
				 errhint("Hits older than apicount.retention (currently %s) are not counted.",
						 apicount_retention_text)));

	/* the rest of the key */
	if (apicount_track_callers)
	{
		const inet *ip = NULL;

		if (user != NULL)
			hit->key.user_h = apicount_hash_string(user, user_len);
		if (req->has_ip)
			ip = (const inet *) plain_varlena(req->client_ip);
		set_key_tail(&hit->key, apicount_minute_of(ts), KEY_TRACKED, ip);
	}
	else
	{
		set_key_tail(&hit->key, apicount_minute_of(ts), 0, NULL);
		user = NULL;
	}

	hit->method = hit->method_buf;
	hit->user = hit->key.user_h != 0 ? user : NULL;
	hit->user_len = hit->key.user_h != 0 ? user_len : 0;
	hit->status = req->has_status ? req->status : 0;
	hit->has_latency = req->has_latency;
	/* rounded half up (latency_ms is checked to be in [0, 1 day]) */
	hit->latency_ns = req->has_latency ?
		(uint64) (req->latency_ms * 1000000.0 + 0.5) : 0;
	hit->slot = apicount_slot_in_minute(ts, hit->key.minute);

	pending_prepare(hit);
}

void
ingest_request(const RequestValues *req)
{
	char		stackbuf[3 * STACK_PATH_BYTES + 4];
	PathSpace	space = {stackbuf, sizeof(stackbuf)};
	PendingHit	hit;

	apicount_require_preload();
	prepare_hit(req, &hit, &space);
	pending_add(&hit);
	if (hit.path != stackbuf)
		pfree(unconstify(char *, hit.path));
}

/* the values of one row of apicount.requests */
static void
slot_to_request(TupleTableSlot *slot, RequestValues *req)
{
	Datum	   *values;
	bool	   *nulls;

	if (slot->tts_tupleDescriptor->natts != REQ_NATTS)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("apicount.requests has %d columns, expected %d",
						slot->tts_tupleDescriptor->natts, REQ_NATTS),
				 errhint("Recreate the extension; its tables must not be altered.")));

	slot_getallattrs(slot);
	values = slot->tts_values;
	nulls = slot->tts_isnull;

	memset(req, 0, sizeof(*req));
	req->has_ts = !nulls[0];
	if (req->has_ts)
		req->ts = DatumGetTimestampTz(values[0]);
	req->method = nulls[1] ? NULL : plain_varlena(values[1]);
	req->path = nulls[2] ? NULL : plain_varlena(values[2]);
	req->has_ip = !nulls[3];
	req->client_ip = values[3];
	req->user_id = nulls[4] ? NULL : plain_varlena(values[4]);
	req->has_status = !nulls[5];
	if (req->has_status)
		req->status = DatumGetInt32(values[5]);
	req->has_latency = !nulls[6];
	if (req->has_latency)
		req->latency_ms = DatumGetFloat8(values[6]);
}

/* one row of apicount.requests (INSERT) */
void
ingest_slot(TupleTableSlot *slot)
{
	RequestValues req;

	slot_to_request(slot, &req);
	ingest_request(&req);
}

/*
 * A batch of rows (COPY).  Rows are prepared (validated, normalized, their
 * key hashed) PREPARE_AHEAD rows before they are recorded: preparing a row
 * starts loading the index slot its key will probe, and the slot is in
 * cache by the time the row is recorded, a few rows later, while the row
 * itself still is.  The slots' values are prefetched a few rows ahead too.
 * A bad row throws with the rows before it recorded in the pending counts;
 * they go with the statement's (sub)transaction, as its earlier batches do.
 * *row tells the error context which row is being handled (1-based).
 */
#define PREPARE_AHEAD		8
#define SLOT_PREFETCH_AHEAD 4

void
ingest_slots(TupleTableSlot **slots, int nslots, int *row)
{
	MemoryContext batchcxt;
	MemoryContext oldcxt;
	PendingHit	ring[PREPARE_AHEAD];
	PathSpace	space = {NULL, 0};
	int			i;

	apicount_require_preload();
	batchcxt = AllocSetContextCreate(CurrentMemoryContext,
									 "apicount batch",
									 ALLOCSET_DEFAULT_SIZES);
	oldcxt = MemoryContextSwitchTo(batchcxt);
	for (i = 0; i < nslots + PREPARE_AHEAD; i++)
	{
		/* record row i - PREPARE_AHEAD, then prepare row i in its place */
		if (i >= PREPARE_AHEAD)
		{
			*row = i - PREPARE_AHEAD + 1;
			pending_add(&ring[i % PREPARE_AHEAD]);
		}
		/* rows prepared 3 and 6 rows ago: the next stages of their loads */
		if (i >= 3 && i - 3 < nslots)
			pending_prefetch_fold(&ring[(i - 3) % PREPARE_AHEAD], 1);
		if (i >= 6 && i - 6 < nslots)
			pending_prefetch_fold(&ring[(i - 6) % PREPARE_AHEAD], 2);
		if (i < nslots)
		{
			RequestValues req;

			if (i + SLOT_PREFETCH_AHEAD < nslots)
				requests_slot_prefetch(slots[i + SLOT_PREFETCH_AHEAD]);
			*row = i + 1;
			slot_to_request(slots[i], &req);
			prepare_hit(&req, &ring[i % PREPARE_AHEAD], &space);
		}
	}
	MemoryContextSwitchTo(oldcxt);
	MemoryContextDelete(batchcxt);
}

/*
 * apicount.hit(path, method, client_ip, user_id, status, latency_ms, ts)
 * Not strict: NULL arguments mean what a NULL column means.
 */
Datum
apicount_hit(PG_FUNCTION_ARGS)
{
	RequestValues req;

	memset(&req, 0, sizeof(req));
	req.path = PG_ARGISNULL(0) ? NULL : PG_GETARG_TEXT_PP(0);
	req.method = PG_ARGISNULL(1) ? NULL : PG_GETARG_TEXT_PP(1);
	req.has_ip = !PG_ARGISNULL(2);
	if (req.has_ip)
		req.client_ip = PG_GETARG_DATUM(2);
	req.user_id = PG_ARGISNULL(3) ? NULL : PG_GETARG_TEXT_PP(3);
	req.has_status = !PG_ARGISNULL(4);
	if (req.has_status)
		req.status = PG_GETARG_INT32(4);
	req.has_latency = !PG_ARGISNULL(5);
	if (req.has_latency)
		req.latency_ms = PG_GETARG_FLOAT8(5);
	req.has_ts = !PG_ARGISNULL(6);
	if (req.has_ts)
		req.ts = PG_GETARG_TIMESTAMPTZ(6);

	ingest_request(&req);
	PG_RETURN_VOID();
}

/* apicount.normalize_path(text): the ingest normalization, for queries */
Datum
apicount_normalize_path_sql(PG_FUNCTION_ARGS)
{
	text	   *in = PG_GETARG_TEXT_PP(0);
	int			len = VARSIZE_ANY_EXHDR(in);
	char	   *out = palloc(3 * (Size) len + 4);
	size_t		outlen;
	NormResult	r;

	r = apicount_normalize_path(VARDATA_ANY(in), len, true, out, &outlen);
	if (r == NORM_EMPTY)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("request path must not be empty")));
	if (r == NORM_CONTROL_CHAR)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("request path must not contain control characters")));
	PG_RETURN_TEXT_P(cstring_to_text_with_len(out, (int) outlen));
}

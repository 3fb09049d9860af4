/*-------------------------------------------------------------------------
 * ingest.c
 *		Rows of apicount.requests (from its table access method) and hit().
 *
 * Owns validation and the mapping from SQL values to a pending hit: datums
 * in, PendingHit out.  Every check happens before anything is recorded, so
 * a row either counts whole or raises an error; the statement's earlier
 * rows are dropped with its (sub)transaction.
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

#include "counters.h"
#include "guc.h"
#include "ingest.h"
#include "normalize.h"
#include "pending.h"

PG_FUNCTION_INFO_V1(apicount_hit);
PG_FUNCTION_INFO_V1(apicount_normalize_path_sql);

#define FUTURE_LIMIT_USECS		(5 * USECS_PER_MINUTE)
#define MAX_LATENCY_MS			86400000.0	/* one day */
#define STACK_PATH_BYTES		2048

/* column order: ts, method, path, client_ip, user_id, status, latency_ms */
#define REQ_NATTS 7

void
apicount_require_preload(void)
{
	if (!counters_ready())
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("apicount must be loaded via shared_preload_libraries"),
				 errhint("Add apicount to shared_preload_libraries in postgresql.conf and restart the server.")));
}

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
 * Validate and normalize one request into *hit (its key hashed, ready for
 * pending_add).  The normalized path goes to stackbuf (3 * STACK_PATH_BYTES
 * + 4 bytes) when it fits and stackbuf is not NULL, else to a palloc'd
 * buffer in the current memory context.  Throws on bad input.
 */
static void
prepare_hit(const RequestValues *req, PendingHit *hit, char *stackbuf)
{
	char	   *path;
	int			path_len;
	char	   *method = hit->method_buf;
	size_t		method_len;
	const char *user = NULL;
	int			user_len = 0;
	TimestampTz now = GetCurrentStatementStartTimestamp();
	TimestampTz ts;
	NormResult	r;
	int			truncated = 0;

	apicount_require_preload();

	/* path */
	if (req->path == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("request path must not be null")));
	{
		const char *in = VARDATA_ANY(req->path);
		int			len = VARSIZE_ANY_EXHDR(req->path);

		path = (stackbuf != NULL && len <= STACK_PATH_BYTES) ? stackbuf :
			palloc(3 * (Size) len + 4);
		path_len = normalize_or_error(in, len, path);
	}
	if (path_len > APICOUNT_MAX_PATH)
	{
		path_len = pg_mbcliplen(path, path_len, APICOUNT_MAX_PATH);
		truncated++;
	}

	/* method */
	if (req->method == NULL)
	{
		strcpy(method, "GET");
		method_len = 3;
	}
	else
	{
		r = apicount_normalize_method(VARDATA_ANY(req->method),
									  VARSIZE_ANY_EXHDR(req->method),
									  method, &method_len);
		if (r != NORM_OK)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("invalid HTTP method \"%s\"",
							text_to_cstring(req->method)),
					 errdetail("A method is an HTTP token (letters, digits and !#$%%&'*+-.^_`|~) of 1 to %d characters.",
							   APICOUNT_MAX_METHOD)));
	}

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
				truncated++;	/* counted only if the user id is stored */
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

	/* build the key */
	memset(hit, 0, offsetof(PendingHit, method_buf));
	hit->key.minute = apicount_minute_of(ts);
	hit->key.method_h = apicount_hash_string(method, method_len);
	hit->key.path_h = apicount_hash_string(path, path_len);
	if (apicount_track_callers)
	{
		hit->key.flags |= KEY_TRACKED;
		if (user != NULL)
			hit->key.user_h = apicount_hash_string(user, user_len);
		if (req->has_ip)
		{
			inet	   *ip = DatumGetInetPP(req->client_ip);

			hit->key.ip_family = ip_family(ip);
			hit->key.ip_bits = ip_bits(ip);
			memcpy(hit->key.ip_addr, ip_addr(ip), ip_addrsize(ip));
		}
	}
	else
		user = NULL;

	hit->method = method;
	hit->method_len = (int) method_len;
	hit->path = path;
	hit->path_len = path_len;
	hit->user = hit->key.user_h != 0 ? user : NULL;
	hit->user_len = hit->key.user_h != 0 ? user_len : 0;
	hit->status = req->has_status ? req->status : 0;
	hit->has_latency = req->has_latency;
	hit->latency_ns = req->has_latency ?
		(uint64) llround(req->latency_ms * 1000000.0) : 0;
	hit->slot = apicount_slot_of(ts);
	hit->truncated = truncated;

	pending_prepare(hit);
}

void
ingest_request(const RequestValues *req)
{
	char		stackbuf[3 * STACK_PATH_BYTES + 4];
	PendingHit	hit;

	prepare_hit(req, &hit, stackbuf);
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
	req->method = nulls[1] ? NULL : DatumGetTextPP(values[1]);
	req->path = nulls[2] ? NULL : DatumGetTextPP(values[2]);
	req->has_ip = !nulls[3];
	req->client_ip = values[3];
	req->user_id = nulls[4] ? NULL : DatumGetTextPP(values[4]);
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
 * A batch of rows (COPY).  Every row is validated and its key hashed
 * first, which also starts loading the index slots the keys will probe;
 * then the rows are recorded, their index slots by now in cache.  A bad
 * row throws before the batch records anything, and the statement's
 * earlier batches go with its (sub)transaction, as a single row's would.
 * *row tells the error context which row is being handled (1-based).
 */
void
ingest_slots(TupleTableSlot **slots, int nslots, int *row)
{
	MemoryContext batchcxt;
	MemoryContext oldcxt;
	PendingHit *hits;
	int			i;

	batchcxt = AllocSetContextCreate(CurrentMemoryContext,
									 "apicount batch",
									 ALLOCSET_DEFAULT_SIZES);
	oldcxt = MemoryContextSwitchTo(batchcxt);
	hits = palloc(sizeof(PendingHit) * nslots);
	for (i = 0; i < nslots; i++)
	{
		RequestValues req;

		*row = i + 1;
		slot_to_request(slots[i], &req);
		prepare_hit(&req, &hits[i], NULL);
	}
	MemoryContextSwitchTo(oldcxt);
	for (i = 0; i < nslots; i++)
	{
		*row = i + 1;
		pending_add(&hits[i]);
	}
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

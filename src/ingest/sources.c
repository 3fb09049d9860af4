/*-------------------------------------------------------------------------
 * sources.c
 *		Positions of shipped access logs: apicount.ship_position(), their
 *		slots in shared memory, and their flush into apicount._sources.
 *
 * Owns the exactly-once contract of apicount-ship (see sources.h).  A
 * source's slot holds its latest committed position and a commit sequence
 * number; the flush writes the positions committed since the last flush
 * in the same transaction as the rollups, and marks them flushed after its
 * commit.  Slots are fixed in number (apicount.max_sources) and are kept
 * until the server stops, so a source that has a slot has its latest
 * position there, and one that has none has it in apicount._sources.
 *
 * Memory: the pending position of a transaction is a static struct (no
 * allocation at commit, where an ERROR is not allowed); the flush's
 * snapshot lives in the caller's memory context (FlushContext).
 * Locks: the gate (see sources.h), then the slot lock; never the other
 * way round.  Commits take the counters' partition locks inside the gate.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "common/hashfn.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "storage/lmgr.h"
#include "storage/lock.h"
#include "storage/lwlock.h"
#include "storage/shmem.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/lsyscache.h"
#include "utils/timestamp.h"

#include "preload.h"
#include "sources.h"

#define SOURCE_NAME_MAX		128		/* bytes, with the terminating zero */
#define SOURCE_FILEID_MAX	128

typedef struct SourcePos
{
	char		file_id[SOURCE_FILEID_MAX];
	int64		offset;
	int64		lines;
	int64		rejected;
	TimestampTz updated_at;
} SourcePos;

typedef struct SourceSlot
{
	bool		used;
	char		name[SOURCE_NAME_MAX];
	SourcePos	pos;			/* latest committed, when commit_seq > 0 */
	uint64		commit_seq;		/* commits so far */
	uint64		flushed_seq;	/* commit_seq the last flush wrote */
} SourceSlot;

typedef struct SourcesShared
{
	LWLock	   *gate;
	LWLock	   *lock;			/* the slots */
	int			nslots;
	SourceSlot	slots[FLEXIBLE_ARRAY_MEMBER];
} SourcesShared;

typedef struct SourceSnap
{
	int			slot;
	uint64		seq;
	char		name[SOURCE_NAME_MAX];
	SourcePos	pos;
} SourceSnap;

int			apicount_max_sources = 64;

static SourcesShared *sources = NULL;

/* the position the current transaction will commit */
static struct
{
	bool		active;
	bool		gated;			/* holds the gate (between commit_begin/end) */
	int			slot;
	SourcePos	pos;
}			pending_pos;

/* the flush's snapshot */
static SourceSnap *snap = NULL;
static int	snap_n = 0;

PG_FUNCTION_INFO_V1(apicount_ship_position);
PG_FUNCTION_INFO_V1(apicount_live_sources);

void
sources_define_gucs(void)
{
	DefineCustomIntVariable("apicount.max_sources",
							"Maximum number of shipped log sources (apicount-ship) per server start.",
							"Each source keeps a slot of shared memory until the server stops.",
							&apicount_max_sources,
							64, 1, 10000,
							PGC_POSTMASTER, 0,
							NULL, NULL, NULL);
}

Size
sources_shmem_size(void)
{
	return add_size(offsetof(SourcesShared, slots),
					mul_size(sizeof(SourceSlot), apicount_max_sources));
}

void
sources_shmem_request(void)
{
	RequestAddinShmemSpace(sources_shmem_size());
	RequestNamedLWLockTranche("apicount_sources", 2);
}

/* called with AddinShmemInitLock held */
void
sources_shmem_init(void)
{
	bool		found;

	sources = ShmemInitStruct("apicount sources", sources_shmem_size(), &found);
	if (!found)
	{
		LWLockPadded *locks = GetNamedLWLockTranche("apicount_sources");

		memset(sources, 0, sources_shmem_size());
		sources->gate = &locks[0].lock;
		sources->lock = &locks[1].lock;
		sources->nslots = apicount_max_sources;
	}
}

static void
require_sources(void)
{
	apicount_require_preload();
	if (sources == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("apicount source positions are not in shared memory"),
				 errhint("Restart the server after installing this version of apicount.")));
}

/* the slot of a name, or -1; slot lock held */
static int
find_slot(const char *name)
{
	int			i;

	for (i = 0; i < sources->nslots; i++)
		if (sources->slots[i].used && strcmp(sources->slots[i].name, name) == 0)
			return i;
	return -1;
}

/* the slot of a name, made if needed (ERROR when all are taken) */
static int
claim_slot(const char *name)
{
	int			i;

	LWLockAcquire(sources->lock, LW_EXCLUSIVE);
	i = find_slot(name);
	if (i < 0)
	{
		for (i = 0; i < sources->nslots; i++)
			if (!sources->slots[i].used)
				break;
		if (i == sources->nslots)
		{
			LWLockRelease(sources->lock);
			ereport(ERROR,
					(errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
					 errmsg("apicount has no room for source \"%s\"", name),
					 errdetail("All %d source slots are in use since the server started.",
							   sources->nslots),
					 errhint("Raise apicount.max_sources and restart the server.")));
		}
		memset(&sources->slots[i], 0, sizeof(SourceSlot));
		sources->slots[i].used = true;
		strlcpy(sources->slots[i].name, name, SOURCE_NAME_MAX);
	}
	LWLockRelease(sources->lock);
	return i;
}

/* text argument as a C string of at most max - 1 bytes */
static char *
text_arg(FunctionCallInfo fcinfo, int argno, const char *what, int max)
{
	char	   *s = text_to_cstring(PG_GETARG_TEXT_PP(argno));

	if (s[0] == '\0' || strlen(s) >= (size_t) max)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s must have 1 to %d bytes", what, max - 1)));
	return s;
}

/*
 * The committed position of a source (the slot's, else the table's):
 * false when it has none.
 */
static bool
current_position(const char *name, int slot, char *file_id, int64 *offset)
{
	bool		found = false;
	Oid			argtypes[1] = {TEXTOID};
	Datum		args[1];
	int			ret;

	LWLockAcquire(sources->lock, LW_SHARED);
	if (sources->slots[slot].commit_seq > 0)
	{
		strlcpy(file_id, sources->slots[slot].pos.file_id, SOURCE_FILEID_MAX);
		*offset = sources->slots[slot].pos.offset;
		found = true;
	}
	LWLockRelease(sources->lock);
	if (found)
		return true;

	args[0] = CStringGetTextDatum(name);
	SPI_connect();
	ret = SPI_execute_with_args("SELECT file_id, file_offset FROM apicount._sources "
								"WHERE name OPERATOR(pg_catalog.=) $1",
								1, argtypes, args, NULL, true, 1);
	if (ret != SPI_OK_SELECT)
		elog(ERROR, "could not read apicount._sources: %s", SPI_result_code_string(ret));
	if (SPI_processed == 1)
	{
		bool		isnull;
		char	   *f = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1);

		strlcpy(file_id, f, SOURCE_FILEID_MAX);
		*offset = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0],
											  SPI_tuptable->tupdesc, 2, &isnull));
		found = true;
	}
	SPI_finish();
	return found;
}

/*
 * apicount.ship_position(source, file_id, file_offset, lines, rejected,
 *						  prev_file_id, prev_offset)
 *
 * Records the position the calling transaction ships up to; it commits
 * with the transaction's hits.  prev_* is the position the shipper started
 * the batch from (NULL for a source that has none): a different committed
 * position means another shipper moved the source, and raises 40001.
 */
Datum
apicount_ship_position(PG_FUNCTION_ARGS)
{
	char	   *name;
	char	   *file_id;
	int64		offset;
	int64		lines;
	int64		rejected;
	LOCKTAG		tag;
	uint64		h;
	int			slot;
	char		cur_id[SOURCE_FILEID_MAX];
	int64		cur_offset = 0;
	bool		has_cur;
	bool		has_prev;

	require_sources();
	if (PG_ARGISNULL(0) || PG_ARGISNULL(1) || PG_ARGISNULL(2) ||
		PG_ARGISNULL(3) || PG_ARGISNULL(4))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("source, file_id, file_offset, lines and rejected must not be NULL")));
	if (PG_ARGISNULL(5) != PG_ARGISNULL(6))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("prev_file_id and prev_offset must be both NULL or both given")));
	name = text_arg(fcinfo, 0, "source", SOURCE_NAME_MAX);
	file_id = text_arg(fcinfo, 1, "file_id", SOURCE_FILEID_MAX);
	offset = PG_GETARG_INT64(2);
	lines = PG_GETARG_INT64(3);
	rejected = PG_GETARG_INT64(4);
	if (offset < 0 || lines < 0 || rejected < 0)
		ereport(ERROR,
				(errcode(ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE),
				 errmsg("file_offset, lines and rejected must not be negative")));
	if (GetCurrentTransactionNestLevel() != 1)
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("apicount.ship_position cannot be called in a subtransaction"),
				 errhint("Call it at the top level of the transaction of the COPY it covers.")));
	if (pending_pos.active &&
		strcmp(sources->slots[pending_pos.slot].name, name) != 0)
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("a transaction can ship the position of one source only"),
				 errdetail("This transaction already ships source \"%s\".",
						   sources->slots[pending_pos.slot].name)));

	/* one shipper per source at a time: held until the transaction ends */
	h = hash_bytes_extended((const unsigned char *) name, strlen(name), 0);
	SET_LOCKTAG_ADVISORY(tag, MyDatabaseId, (uint32) (h >> 32), (uint32) h, 3);
	(void) LockAcquire(&tag, ExclusiveLock, false, false);

	slot = claim_slot(name);
	if (pending_pos.active)
	{
		strlcpy(cur_id, pending_pos.pos.file_id, SOURCE_FILEID_MAX);
		cur_offset = pending_pos.pos.offset;
		has_cur = true;
	}
	else
		has_cur = current_position(name, slot, cur_id, &cur_offset);

	has_prev = !PG_ARGISNULL(5);
	if (has_prev != has_cur ||
		(has_prev && (strcmp(text_to_cstring(PG_GETARG_TEXT_PP(5)), cur_id) != 0 ||
					  PG_GETARG_INT64(6) != cur_offset)))
		ereport(ERROR,
				(errcode(ERRCODE_T_R_SERIALIZATION_FAILURE),
				 errmsg("source \"%s\" is not at the position this batch starts from", name),
				 has_cur ?
				 errdetail("Its committed position is offset %lld of file %s.",
						   (long long) cur_offset, cur_id) :
				 errdetail("It has no committed position."),
				 errhint("Read the position from apicount.sources again and ship from there.")));

	pending_pos.active = true;
	pending_pos.slot = slot;
	strlcpy(pending_pos.pos.file_id, file_id, SOURCE_FILEID_MAX);
	pending_pos.pos.offset = offset;
	pending_pos.pos.lines = lines;
	pending_pos.pos.rejected = rejected;
	pending_pos.pos.updated_at = GetCurrentTransactionStartTimestamp();
	PG_RETURN_VOID();
}

/* before the merge of the committing transaction's hits (never throws) */
void
sources_commit_begin(void)
{
	if (pending_pos.active && sources != NULL)
	{
		LWLockAcquire(sources->gate, LW_SHARED);
		pending_pos.gated = true;
	}
}

/* after it: the position goes in with the hits (never throws) */
void
sources_commit_end(void)
{
	if (pending_pos.active && sources != NULL)
	{
		SourceSlot *s = &sources->slots[pending_pos.slot];

		LWLockAcquire(sources->lock, LW_EXCLUSIVE);
		s->pos = pending_pos.pos;
		s->pos.updated_at = GetCurrentTimestamp();
		s->commit_seq++;
		LWLockRelease(sources->lock);
	}
	if (pending_pos.gated)
		LWLockRelease(sources->gate);
	pending_pos.gated = false;
	pending_pos.active = false;
}

/* the end of a transaction that recorded no hits (or an abort) */
void
sources_xact_end(XactEvent event)
{
	if (!pending_pos.active)
		return;
	switch (event)
	{
		case XACT_EVENT_COMMIT:
			sources_commit_begin();
			sources_commit_end();
			break;
		case XACT_EVENT_PRE_PREPARE:
			ereport(ERROR,
					(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
					 errmsg("cannot PREPARE a transaction that has shipped an apicount source position"),
					 errhint("Ship positions in a transaction that commits directly.")));
			break;
		case XACT_EVENT_ABORT:
		case XACT_EVENT_PARALLEL_ABORT:
		case XACT_EVENT_PREPARE:
			/* an abort may come after commit_begin failed half-way */
			if (pending_pos.gated)
				LWLockRelease(sources->gate);
			pending_pos.gated = false;
			pending_pos.active = false;
			break;
		default:
			break;
	}
}

void
sources_snapshot_begin(void)
{
	if (sources != NULL)
		LWLockAcquire(sources->gate, LW_EXCLUSIVE);
}

/* copy the positions committed since the last flush; release the gate */
void
sources_snapshot_end(void)
{
	int			i;

	snap_n = 0;
	snap = NULL;
	if (sources == NULL)
		return;
	snap = palloc(sizeof(SourceSnap) * sources->nslots);
	LWLockAcquire(sources->lock, LW_SHARED);
	for (i = 0; i < sources->nslots; i++)
	{
		SourceSlot *s = &sources->slots[i];

		if (!s->used || s->commit_seq == s->flushed_seq)
			continue;
		snap[snap_n].slot = i;
		snap[snap_n].seq = s->commit_seq;
		memcpy(snap[snap_n].name, s->name, SOURCE_NAME_MAX);
		snap[snap_n].pos = s->pos;
		snap_n++;
	}
	LWLockRelease(sources->lock);
	LWLockRelease(sources->gate);
}

static Datum
array_of(Datum *values, int n, Oid type)
{
	int16		typlen;
	bool		typbyval;
	char		typalign;

	get_typlenbyvalalign(type, &typlen, &typbyval, &typalign);
	return PointerGetDatum(construct_array(values, n, type, typlen, typbyval,
										   typalign));
}

/* inside the flush transaction, with SPI connected */
void
sources_write_snapshot(void)
{
	Datum	   *v[6];
	Datum		args[6];
	Oid			argtypes[6] = {TEXTARRAYOID, TEXTARRAYOID, INT8ARRAYOID,
	INT8ARRAYOID, INT8ARRAYOID, TIMESTAMPTZARRAYOID};
	Oid			elemtypes[6] = {TEXTOID, TEXTOID, INT8OID, INT8OID, INT8OID,
	TIMESTAMPTZOID};
	int			i;
	int			ret;

	if (snap_n == 0)
		return;
	for (i = 0; i < 6; i++)
		v[i] = palloc(sizeof(Datum) * snap_n);
	for (i = 0; i < snap_n; i++)
	{
		v[0][i] = CStringGetTextDatum(snap[i].name);
		v[1][i] = CStringGetTextDatum(snap[i].pos.file_id);
		v[2][i] = Int64GetDatum(snap[i].pos.offset);
		v[3][i] = Int64GetDatum(snap[i].pos.lines);
		v[4][i] = Int64GetDatum(snap[i].pos.rejected);
		v[5][i] = TimestampTzGetDatum(snap[i].pos.updated_at);
	}
	for (i = 0; i < 6; i++)
		args[i] = array_of(v[i], snap_n, elemtypes[i]);
	ret = SPI_execute_with_args(
								"INSERT INTO apicount._sources AS t "
								"(name, file_id, file_offset, lines, rejected, updated_at) "
								"SELECT pg_catalog.unnest($1::pg_catalog.text[]), "
								" pg_catalog.unnest($2::pg_catalog.text[]), "
								" pg_catalog.unnest($3::pg_catalog.int8[]), "
								" pg_catalog.unnest($4::pg_catalog.int8[]), "
								" pg_catalog.unnest($5::pg_catalog.int8[]), "
								" pg_catalog.unnest($6::pg_catalog.timestamptz[]) "
								"ON CONFLICT (name) DO UPDATE SET file_id = excluded.file_id, "
								" file_offset = excluded.file_offset, lines = excluded.lines, "
								" rejected = excluded.rejected, updated_at = excluded.updated_at",
								6, argtypes, args, NULL, false, 0);
	if (ret != SPI_OK_INSERT)
		elog(ERROR, "could not write apicount._sources: %s",
			 SPI_result_code_string(ret));
}

/* after the flush committed: what it wrote is flushed */
void
sources_flushed(void)
{
	int			i;

	if (sources == NULL || snap_n == 0)
		return;
	LWLockAcquire(sources->lock, LW_EXCLUSIVE);
	for (i = 0; i < snap_n; i++)
	{
		SourceSlot *s = &sources->slots[snap[i].slot];

		if (s->used && s->flushed_seq < snap[i].seq)
			s->flushed_seq = snap[i].seq;
	}
	LWLockRelease(sources->lock);
	snap_n = 0;
}

/* DROP EXTENSION: the positions go with the tables */
void
sources_discard(void)
{
	if (sources == NULL)
		return;
	LWLockAcquire(sources->gate, LW_EXCLUSIVE);
	LWLockAcquire(sources->lock, LW_EXCLUSIVE);
	memset(sources->slots, 0, sizeof(SourceSlot) * sources->nslots);
	LWLockRelease(sources->lock);
	LWLockRelease(sources->gate);
}

/* apicount._live_sources(): the committed positions in shared memory */
Datum
apicount_live_sources(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	SourceSlot *copy;
	int			n = 0;
	int			i;

	require_sources();
	InitMaterializedSRF(fcinfo, 0);
	copy = palloc(sizeof(SourceSlot) * sources->nslots);
	LWLockAcquire(sources->lock, LW_SHARED);
	for (i = 0; i < sources->nslots; i++)
		if (sources->slots[i].used && sources->slots[i].commit_seq > 0)
			copy[n++] = sources->slots[i];
	LWLockRelease(sources->lock);

	for (i = 0; i < n; i++)
	{
		Datum		values[7];
		bool		nulls[7] = {0};

		values[0] = CStringGetTextDatum(copy[i].name);
		values[1] = CStringGetTextDatum(copy[i].pos.file_id);
		values[2] = Int64GetDatum(copy[i].pos.offset);
		values[3] = Int64GetDatum(copy[i].pos.lines);
		values[4] = Int64GetDatum(copy[i].pos.rejected);
		values[5] = TimestampTzGetDatum(copy[i].pos.updated_at);
		values[6] = BoolGetDatum(copy[i].commit_seq == copy[i].flushed_seq);
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	return (Datum) 0;
}

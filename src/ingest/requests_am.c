/*-------------------------------------------------------------------------
 * requests_am.c
 *		The table access method of apicount.requests: every row inserted is
 *		counted (ingest_slot, or ingest_slots for a COPY batch) and nothing is
 *		stored.
 *
 * Owns the TableAmRoutine.  INSERT calls tuple_insert once per row and
 * COPY calls multi_insert with batches of rows, so neither goes through a
 * trigger.  Scans are always empty, so UPDATE and DELETE find nothing; the
 * update, delete and lock callbacks still refuse, as do indexes.  The
 * relation has a storage file that stays empty (created like any table's,
 * so that TRUNCATE, DROP, VACUUM FULL, SET TABLESPACE and pg_relation_size
 * behave as usual).  AFTER ROW triggers would get no row (nothing is
 * stored to fetch); they are not supported.
 *
 * Error rule: a row that fails validation raises an ERROR before anything
 * of it is recorded; the statement's earlier rows go with its
 * (sub)transaction, as for any table.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/multixact.h"
#include "access/tableam.h"
#include "catalog/namespace.h"
#include "catalog/storage.h"
#include "catalog/storage_xlog.h"
#include "executor/tuptable.h"
#include "commands/extension.h"
#include "storage/smgr.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"

#include "compat.h"
#include "requests_slot.h"

#ifndef APICOUNT_NOOP_AM
#include "ingest.h"
#else

/*
 * bench/noop_am builds this file with APICOUNT_NOOP_AM: the same access
 * method with the counting left out, which measures what PostgreSQL itself
 * spends on an INSERT into apicount.requests (the floor of workload 1).
 */
PG_MODULE_MAGIC;
#define apicount_requests_am_handler apicount_noop_am_handler
#define ingest_slot(slot)				((void) (slot))
#define ingest_slots(slots, n, row)		((void) (slots), (void) (n), (void) (row))
#endif

PG_FUNCTION_INFO_V1(apicount_requests_am_handler);

static void
refuse(const char *what)
{
	ereport(ERROR,
			(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
			 errmsg("apicount.requests does not support %s", what),
			 errdetail("Rows inserted into apicount.requests are counted, not stored."),
			 errhint("Use INSERT or COPY to record requests, and the apicount query functions to read them.")));
}

static const TupleTableSlotOps *
requests_slot_callbacks(Relation rel)
{
	return &apicount_requests_slot_ops;
}

/* ---- scans: always empty ---- */

static TableScanDesc
requests_scan_begin(Relation rel, Snapshot snapshot, int nkeys,
					struct ScanKeyData *key, ParallelTableScanDesc pscan,
					uint32 flags)
{
	TableScanDesc scan = palloc0(sizeof(TableScanDescData));

	scan->rs_rd = rel;
	scan->rs_snapshot = snapshot;
	scan->rs_nkeys = nkeys;
	scan->rs_flags = flags;
	scan->rs_parallel = pscan;
	return scan;
}

static void
requests_scan_end(TableScanDesc scan)
{
	pfree(scan);
}

static void
requests_scan_rescan(TableScanDesc scan, struct ScanKeyData *key,
					 bool set_params, bool allow_strat, bool allow_sync,
					 bool allow_pagemode)
{
}

static bool
requests_scan_getnextslot(TableScanDesc scan, ScanDirection direction,
						  TupleTableSlot *slot)
{
	ExecClearTuple(slot);
	return false;
}

static void
requests_scan_set_tidrange(TableScanDesc scan, ItemPointer mintid,
						   ItemPointer maxtid)
{
}

static IndexFetchTableData *
requests_index_fetch_begin(Relation rel)
{
	refuse("indexes");
	return NULL;
}

static void
requests_index_fetch_reset(IndexFetchTableData *data)
{
}

static void
requests_index_fetch_end(IndexFetchTableData *data)
{
}

static bool
requests_index_fetch_tuple(IndexFetchTableData *scan, ItemPointer tid,
						   Snapshot snapshot, TupleTableSlot *slot,
						   bool *call_again, bool *all_dead)
{
	return false;
}

static bool
requests_fetch_row_version(Relation rel, ItemPointer tid, Snapshot snapshot,
						   TupleTableSlot *slot)
{
	return false;
}

static bool
requests_tuple_tid_valid(TableScanDesc scan, ItemPointer tid)
{
	return false;
}

static void
requests_get_latest_tid(TableScanDesc scan, ItemPointer tid)
{
}

static bool
requests_satisfies_snapshot(Relation rel, TupleTableSlot *slot,
							Snapshot snapshot)
{
	return false;
}

static TransactionId
requests_index_delete_tuples(Relation rel, TM_IndexDeleteOp *delstate)
{
	refuse("indexes");
	return InvalidTransactionId;
}

/* ---- inserts: counted, not stored ---- */

static void
requests_tuple_insert(Relation rel, TupleTableSlot *slot, CommandId cid,
					  int options, struct BulkInsertStateData *bistate)
{
	ingest_slot(slot);
	slot->tts_tableOid = RelationGetRelid(rel);
}

/* which row of a COPY batch failed (COPY reports the batch's last line) */
typedef struct BatchPosition
{
	int			row;
	int			nrows;
} BatchPosition;

static void
batch_error_context(void *arg)
{
	BatchPosition *pos = (BatchPosition *) arg;

	errcontext("row %d of a batch of %d rows (the line number reported by COPY is the batch's last line)",
			   pos->row, pos->nrows);
}

static void
requests_multi_insert(Relation rel, TupleTableSlot **slots, int nslots,
					  CommandId cid, int options,
					  struct BulkInsertStateData *bistate)
{
	ErrorContextCallback errcb;
	BatchPosition pos;
	Oid			relid = RelationGetRelid(rel);
	int			i;

	pos.nrows = nslots;
	errcb.callback = batch_error_context;
	errcb.arg = &pos;
	errcb.previous = error_context_stack;
	error_context_stack = &errcb;
	ingest_slots(slots, nslots, &pos.row);
	for (i = 0; i < nslots; i++)
		slots[i]->tts_tableOid = relid;
	error_context_stack = errcb.previous;
}

static void
requests_insert_speculative(Relation rel, TupleTableSlot *slot, CommandId cid,
							int options, struct BulkInsertStateData *bistate,
							uint32 specToken)
{
	refuse("INSERT ... ON CONFLICT");
}

static void
requests_complete_speculative(Relation rel, TupleTableSlot *slot,
							  uint32 specToken, bool succeeded)
{
	refuse("INSERT ... ON CONFLICT");
}

static void
requests_finish_bulk_insert(Relation rel, int options)
{
}

static TM_Result
requests_tuple_delete(Relation rel, ItemPointer tid, CommandId cid,
					  Snapshot snapshot, Snapshot crosscheck, bool wait,
					  TM_FailureData *tmfd, bool changingPart)
{
	refuse("DELETE");
	return TM_Ok;
}

static TM_Result
requests_tuple_update(Relation rel, ItemPointer otid, TupleTableSlot *slot,
					  CommandId cid, Snapshot snapshot, Snapshot crosscheck,
					  bool wait, TM_FailureData *tmfd,
					  LockTupleMode *lockmode,
					  ApicountUpdateIndexes *update_indexes)
{
	refuse("UPDATE");
	return TM_Ok;
}

static TM_Result
requests_tuple_lock(Relation rel, ItemPointer tid, Snapshot snapshot,
					TupleTableSlot *slot, CommandId cid, LockTupleMode mode,
					LockWaitPolicy wait_policy, uint8 flags,
					TM_FailureData *tmfd)
{
	refuse("row locks");
	return TM_Ok;
}

/* ---- storage: an empty file, like any new table's ---- */

/*
 * Only tables of schema apicount may use this access method: anywhere else
 * it would let whoever can create tables record hits without INSERT on
 * apicount.requests.  Creating storage is how every table gets one (CREATE
 * TABLE, ALTER TABLE SET ACCESS METHOD, TRUNCATE, and the transient table
 * of VACUUM FULL and CLUSTER), so refuse there.  Only the extension's owner
 * can create tables in schema apicount (nobody else has CREATE on it).
 */
static void
check_is_requests(Relation rel)
{
	char	   *nsp;

#ifdef APICOUNT_NOOP_AM
	return;						/* the benchmark's table lives in schema bench */
#endif
	if (creating_extension &&
		CurrentExtensionObject == get_extension_oid("apicount", true))
		return;
	nsp = get_namespace_name(RelationGetNamespace(rel));
	if (nsp != NULL && strcmp(nsp, "apicount") == 0)
		return;
	ereport(ERROR,
			(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
			 errmsg("access method apicount_requests is only for apicount.requests"),
			 errhint("Record requests with INSERT INTO apicount.requests.")));
}

static void
requests_set_new_storage(Relation rel, const ApicountRelFile *newrfile,
						 char persistence, TransactionId *freezeXid,
						 MultiXactId *minmulti)
{
	SMgrRelation srel;

	check_is_requests(rel);
	*freezeXid = InvalidTransactionId;
	*minmulti = InvalidMultiXactId;
	srel = RelationCreateStorage(*newrfile, persistence, true);
	if (persistence == RELPERSISTENCE_UNLOGGED)
	{
		smgrcreate(srel, INIT_FORKNUM, false);
		log_smgrcreate(newrfile, INIT_FORKNUM);
#if PG_VERSION_NUM < 170000
		/* as heapam does up to 16; from 17 the checkpointer syncs it */
		smgrimmedsync(srel, INIT_FORKNUM);
#endif
	}
	smgrclose(srel);
}

static void
requests_copy_data(Relation rel, const ApicountRelFile *newrfile)
{
	/* nothing stored: new empty storage, the old one dropped at commit */
	smgrclose(RelationCreateStorage(*newrfile, rel->rd_rel->relpersistence,
									true));
	RelationDropStorage(rel);
}

static void
requests_nontransactional_truncate(Relation rel)
{
}

static void
requests_copy_for_cluster(Relation OldTable, Relation NewTable,
						  Relation OldIndex, bool use_sort,
						  TransactionId OldestXmin,
						  TransactionId *xid_cutoff,
						  MultiXactId *multi_cutoff,
						  double *num_tuples, double *tups_vacuumed,
						  double *tups_recently_dead)
{
	/* VACUUM FULL: nothing stored, nothing to copy */
	*num_tuples = 0;
	*tups_vacuumed = 0;
	*tups_recently_dead = 0;
}

static void
requests_vacuum(Relation rel, struct VacuumParams *params,
				BufferAccessStrategy bstrategy)
{
	/* nothing stored, nothing to vacuum */
}

#if PG_VERSION_NUM >= 170000
static bool
requests_analyze_next_block(TableScanDesc scan, ReadStream *stream)
{
	return false;
}
#else
static bool
requests_analyze_next_block(TableScanDesc scan, BlockNumber blockno,
							BufferAccessStrategy bstrategy)
{
	return false;
}
#endif

static bool
requests_analyze_next_tuple(TableScanDesc scan, TransactionId OldestXmin,
							double *liverows, double *deadrows,
							TupleTableSlot *slot)
{
	return false;
}

static double
requests_index_build_range_scan(Relation table_rel, Relation index_rel,
								struct IndexInfo *index_info, bool allow_sync,
								bool anyvisible, bool progress,
								BlockNumber start_blockno,
								BlockNumber numblocks,
								IndexBuildCallback callback,
								void *callback_state, TableScanDesc scan)
{
	refuse("indexes");
	return 0;
}

static void
requests_index_validate_scan(Relation table_rel, Relation index_rel,
							 struct IndexInfo *index_info, Snapshot snapshot,
							 struct ValidateIndexState *state)
{
	refuse("indexes");
}

static uint64
requests_relation_size(Relation rel, ForkNumber forkNumber)
{
	return 0;
}

static bool
requests_needs_toast_table(Relation rel)
{
	return false;
}

static void
requests_estimate_size(Relation rel, int32 *attr_widths, BlockNumber *pages,
					   double *tuples, double *allvisfrac)
{
	*pages = 0;
	*tuples = 0;
	*allvisfrac = 0;
}

static bool
requests_sample_next_block(TableScanDesc scan,
						   struct SampleScanState *scanstate)
{
	return false;
}

static bool
requests_sample_next_tuple(TableScanDesc scan,
						   struct SampleScanState *scanstate,
						   TupleTableSlot *slot)
{
	return false;
}

static const TableAmRoutine requests_methods = {
	.type = T_TableAmRoutine,

	.slot_callbacks = requests_slot_callbacks,

	.scan_begin = requests_scan_begin,
	.scan_end = requests_scan_end,
	.scan_rescan = requests_scan_rescan,
	.scan_getnextslot = requests_scan_getnextslot,
	.scan_set_tidrange = requests_scan_set_tidrange,
	.scan_getnextslot_tidrange = requests_scan_getnextslot,

	.parallelscan_estimate = table_block_parallelscan_estimate,
	.parallelscan_initialize = table_block_parallelscan_initialize,
	.parallelscan_reinitialize = table_block_parallelscan_reinitialize,

	.index_fetch_begin = requests_index_fetch_begin,
	.index_fetch_reset = requests_index_fetch_reset,
	.index_fetch_end = requests_index_fetch_end,
	.index_fetch_tuple = requests_index_fetch_tuple,

	.tuple_fetch_row_version = requests_fetch_row_version,
	.tuple_tid_valid = requests_tuple_tid_valid,
	.tuple_get_latest_tid = requests_get_latest_tid,
	.tuple_satisfies_snapshot = requests_satisfies_snapshot,
	.index_delete_tuples = requests_index_delete_tuples,

	.tuple_insert = requests_tuple_insert,
	.tuple_insert_speculative = requests_insert_speculative,
	.tuple_complete_speculative = requests_complete_speculative,
	.multi_insert = requests_multi_insert,
	.tuple_delete = requests_tuple_delete,
	.tuple_update = requests_tuple_update,
	.tuple_lock = requests_tuple_lock,
	.finish_bulk_insert = requests_finish_bulk_insert,

#if PG_VERSION_NUM >= 160000
	.relation_set_new_filelocator = requests_set_new_storage,
#else
	.relation_set_new_filenode = requests_set_new_storage,
#endif
	.relation_nontransactional_truncate = requests_nontransactional_truncate,
	.relation_copy_data = requests_copy_data,
	.relation_copy_for_cluster = requests_copy_for_cluster,
	.relation_vacuum = requests_vacuum,
	.scan_analyze_next_block = requests_analyze_next_block,
	.scan_analyze_next_tuple = requests_analyze_next_tuple,
	.index_build_range_scan = requests_index_build_range_scan,
	.index_validate_scan = requests_index_validate_scan,

	.relation_size = requests_relation_size,
	.relation_needs_toast_table = requests_needs_toast_table,

	.relation_estimate_size = requests_estimate_size,

	.scan_sample_next_block = requests_sample_next_block,
	.scan_sample_next_tuple = requests_sample_next_tuple
};

Datum
apicount_requests_am_handler(PG_FUNCTION_ARGS)
{
	PG_RETURN_POINTER(&requests_methods);
}

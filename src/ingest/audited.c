/*-------------------------------------------------------------------------
 * audited.c
 *		The backend's cache of apicount.audited_apis (see audited.h), and
 *		the trigger that tells every backend to read it again.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/table.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/pg_collation.h"
#include "commands/trigger.h"
#include "executor/tuptable.h"
#include "fmgr.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"

#include "audited.h"
#include "counters.h"

PG_FUNCTION_INFO_V1(apicount_audited_changed);

#define AUDIT_CACHE_SIZE	1024	/* direct-mapped, by path hash */

typedef struct AuditCacheSlot
{
	uint64		path_h;			/* 0: empty */
	bool		audited;
} AuditCacheSlot;

static uint64 loaded_gen = PG_UINT64_MAX;	/* none loaded yet */
static text **patterns = NULL;
static int	npatterns = 0;
static AuditCacheSlot cache[AUDIT_CACHE_SIZE];
static bool bump_at_commit = false;

/*
 * Read the patterns.  Directly, not through SQL: the roles that record
 * hits need no privilege on the table, and the scan sees the latest
 * committed rows.
 */
static void
load_patterns(uint64 gen)
{
	Oid			nsp;
	Oid			relid;
	Relation	rel;
	Snapshot	snap;
	TableScanDesc scan;
	TupleTableSlot *slot;
	int			cap = 8;
	int			i;
	MemoryContext oldcxt;

	for (i = 0; i < npatterns; i++)
		pfree(patterns[i]);
	if (patterns != NULL)
		pfree(patterns);
	patterns = NULL;
	npatterns = 0;
	memset(cache, 0, sizeof(cache));

	/* an installation of 0.1 not yet updated has no such table */
	nsp = get_namespace_oid("apicount", true);
	relid = OidIsValid(nsp) ? get_relname_relid("audited_apis", nsp) : InvalidOid;
	if (OidIsValid(relid))
	{
		patterns = MemoryContextAlloc(TopMemoryContext, sizeof(text *) * cap);
		rel = table_open(relid, AccessShareLock);
		snap = RegisterSnapshot(GetLatestSnapshot());
		scan = table_beginscan(rel, snap, 0, NULL);
		slot = table_slot_create(rel, NULL);
		while (table_scan_getnextslot(scan, ForwardScanDirection, slot))
		{
			bool		isnull;
			Datum		d = slot_getattr(slot, 1, &isnull);

			if (isnull)
				continue;
			if (npatterns == cap)
			{
				cap *= 2;
				patterns = repalloc(patterns, sizeof(text *) * cap);
			}
			oldcxt = MemoryContextSwitchTo(TopMemoryContext);
			patterns[npatterns++] = DatumGetTextPCopy(d);
			MemoryContextSwitchTo(oldcxt);
		}
		ExecDropSingleTupleTableSlot(slot);
		table_endscan(scan);
		UnregisterSnapshot(snap);
		table_close(rel, AccessShareLock);
	}
	loaded_gen = gen;
}

bool
audited_path(uint64 path_h, const char *path, int path_len)
{
	uint64		gen = pg_atomic_read_u64(&apicount_shared->audited_gen);
	AuditCacheSlot *slot;
	text	   *t;
	bool		audited = false;
	int			i;

	if (unlikely(gen != loaded_gen))
		load_patterns(gen);
	if (npatterns == 0)
		return false;
	slot = &cache[path_h % AUDIT_CACHE_SIZE];
	if (slot->path_h == path_h)
		return slot->audited;

	t = cstring_to_text_with_len(path, path_len);
	for (i = 0; i < npatterns && !audited; i++)
		audited = DatumGetBool(DirectFunctionCall2Coll(textlike, C_COLLATION_OID,
													   PointerGetDatum(t),
													   PointerGetDatum(patterns[i])));
	pfree(t);
	slot->path_h = path_h;
	slot->audited = audited;
	return audited;
}

/*
 * Statement trigger of apicount.audited_apis: every backend reads the
 * patterns again once this transaction has committed (not before, or a
 * backend could cache the old rows under the new generation).
 */
Datum
apicount_audited_changed(PG_FUNCTION_ARGS)
{
	if (!CALLED_AS_TRIGGER(fcinfo))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("apicount._audited_changed() must be called as a trigger")));
	bump_at_commit = true;
	PG_RETURN_POINTER(NULL);
}

static void
audited_xact_callback(XactEvent event, void *arg)
{
	if (!bump_at_commit)
		return;
	if (event == XACT_EVENT_COMMIT && apicount_shared != NULL)
		pg_atomic_fetch_add_u64(&apicount_shared->audited_gen, 1);
	if (event == XACT_EVENT_COMMIT || event == XACT_EVENT_ABORT ||
		event == XACT_EVENT_PREPARE)
		bump_at_commit = false;
}

void
audited_register_callbacks(void)
{
	RegisterXactCallback(audited_xact_callback, NULL);
}

/*-------------------------------------------------------------------------
 * counters.h
 *		The shared-memory counter table: two tiers of entries.
 *
 * API entries (KEY_API) are keyed (minute, method, path) and count every
 * hit: calls, ok, errors, latency, per-slot counts, and the hits of the
 * API that no caller entry holds ("(other callers)": hits without caller
 * fields, and callers folded for lack of room).  Caller entries
 * (KEY_TRACKED) are keyed (minute, method, path, client_ip, user_id) and
 * count calls, ok and errors per slot.  Each tier has its own capacity
 * (apicount.max_apis, apicount.max_entries), so callers never take an
 * API's room: per-API counts do not depend on how many callers there are.
 * An API that finds no room is counted under its method's path "(other)"
 * (entries of the reserve, KEY_OVERFLOW); a caller that finds none is
 * folded into its API's "(other callers)".  Entries live in entry_table.c
 * (scans use etab_next there); strings live in the string table
 * (strtab.h); keys hold their 64-bit hashes.
 *
 * Locking rules:
 *	- The named LWLock tranche "apicount" holds COUNTER_PARTITIONS locks,
 *	  then STRTAB_PARTITIONS (strtab.h), then LAT_PARTITIONS
 *	  (latency_store.h).
 *	- The table is split into COUNTER_PARTITIONS partitions, each with its
 *	  own LWLock.  Updating an existing entry takes the partition lock in
 *	  shared mode and adds with atomics; creating or removing an entry
 *	  takes it exclusively.
 *	- Only the worker removes entries, so the worker may keep pointers to
 *	  entries between its snapshot and its subtraction.
 *	- Full scans take every partition lock in shared mode, in order.
 *	- Never hold a partition lock while taking a string-table lock.
 *-------------------------------------------------------------------------
 */
#ifndef APICOUNT_COUNTERS_H
#define APICOUNT_COUNTERS_H

#include "port/atomics.h"
#include "storage/condition_variable.h"
#include "storage/latch.h"
#include "storage/lwlock.h"
#include "storage/spin.h"
#include "utils/hsearch.h"
#include "utils/timestamp.h"

#define COUNTER_PARTITIONS		16
#define OVERFLOW_RESERVE		1024	/* entries kept for "(other)" paths */
#define LIVE_HORIZON_SECS		120 /* exact sliding windows up to this */
#define MAX_SLOTS				60

#define KEY_TRACKED		0x01		/* a caller key: caller fields recorded */
#define KEY_OVERFLOW	0x02		/* an API key of path "(other)" (reserve) */
#define KEY_API			0x04		/* an API key (no caller fields) */
#define KEY_FOLDED		0x08		/* pending only: an API key holding hits
									 * whose callers the backend folded */

#define ANY_METHOD		"*"			/* method of the catch-all "(other)" */
#define OTHER_PATH		"(other)"
#define OTHER_CALLERS	"(other callers)"	/* user_id of that caller row */

typedef struct CounterKey
{
	uint64		method_h;
	uint64		path_h;
	uint64		user_h;			/* 0: NULL user id */
	int32		minute;			/* minutes since the PostgreSQL epoch */
	uint8		flags;
	uint8		ip_family;		/* 0: NULL client_ip */
	uint8		ip_bits;
	uint8		pad;
	uint8		ip_addr[16];
} CounterKey;

/* additive counts of one key; used for pending, deltas and snapshots */
typedef struct CounterDelta
{
	uint64		calls;
	uint64		ok;
	uint64		client_errors;
	uint64		server_errors;
	uint64		lat_count;
	uint64		lat_sum_ns;
	uint64		lat_max_ns;
	uint64		truncated;		/* strings truncated (pending only) */
} CounterDelta;

typedef struct LocalSlot
{
	uint32		calls;
	uint32		ok;
	uint32		errors;
} LocalSlot;

/*
 * Unflushed deltas and per-slot counts of one key.  Calls and the latency
 * sum are 64-bit; the others are 32-bit, which holds 4 billion hits of one
 * key between two flushes.  A delta that would pass UINT32_MAX is not added
 * here: counters_add sends that commit's counts to the spill counters
 * instead (see apply_delta).
 *
 * Layout rule: the sliding-window scans read the key, the unflushed
 * latency and the per-slot calls (and errors, ok) of every entry, so those
 * come first and contiguous; the fields only the flush reads come last.
 * With n = apicount.slot_seconds slots per minute, cnt[] holds
 *		calls[n], errors[n], ok[n], then the minute's unflushed ok,
 *		client_errors, server_errors,
 * followed (8-aligned) by a CounterTail.  Use the accessors below.
 */
typedef struct CounterEntry
{
	CounterKey	key;
	pg_atomic_uint64 lat_sum_ns;
	pg_atomic_uint32 lat_count;
	pg_atomic_uint32 cnt[FLEXIBLE_ARRAY_MEMBER];
} CounterEntry;

/*
 * The tail of an entry.  On API entries, other_* count the hits that no
 * caller entry holds (the "(other callers)" row of caller_minute).
 */
typedef struct CounterTail
{
	pg_atomic_uint64 calls;
	pg_atomic_uint64 lat_max_ns;
	pg_atomic_uint64 other_calls;
	pg_atomic_uint32 other_ok;
	pg_atomic_uint32 other_client_errors;
	pg_atomic_uint32 other_server_errors;
	/* set when the entry is made (exclusive partition lock), then read-only */
	uint16		tier;			/* EntryTier: whose capacity it counts in */
	/* set when the entry is made; API entries: later set to 1 (any lock) */
	uint16		late;			/* caller entries: the caller may have been
								 * folded in its minute before the entry
								 * was made (heavy_maybe_folded); API
								 * entries: callers of it were folded */
} CounterTail;

/* the capacities entries count in */
typedef enum EntryTier
{
	TIER_CALLER,				/* apicount.max_entries */
	TIER_API,					/* apicount.max_apis */
	TIER_OTHER,					/* OVERFLOW_RESERVE: "(other)" paths */
	TIER_AUDITED				/* apicount.max_audited_entries: callers and
								 * APIs of audited_apis past their tier */
} EntryTier;

/* the unflushed "(other callers)" counts of an API entry */
typedef struct CounterOther
{
	uint64		calls;
	uint64		ok;
	uint64		client_errors;
	uint64		server_errors;
} CounterOther;

/* slots per minute at most (apicount.slot_seconds is at least 1) */
#define APICOUNT_MAX_SLOTS	60

/* global state in shared memory */
typedef struct ApicountShared
{
	LWLockPadded *locks;		/* COUNTER_PARTITIONS + STRTAB_PARTITIONS */
	int			nslots;			/* slots per minute */
	int			slot_seconds;
	Size		tail_offset;	/* of an entry's CounterTail */
	int64		capacity;		/* apicount.max_entries: caller entries */
	int64		api_capacity;	/* apicount.max_apis: API entries */
	pg_atomic_uint32 normal_entries;	/* caller entries */
	pg_atomic_uint32 api_entries;
	pg_atomic_uint32 overflow_entries;	/* "(other)" API entries */
	int64		audited_capacity;	/* apicount.max_audited_entries */
	pg_atomic_uint32 audited_entries;
	pg_atomic_uint64 audited_folded;	/* audited callers folded: alerts */
	pg_atomic_uint64 audited_alerted;	/* of those, covered by an alert */
	pg_atomic_uint64 audited_gen;	/* bumped when audited_apis changes */

	/* statistics */
	pg_atomic_uint64 hits;
	pg_atomic_uint64 overflow_hits; /* hits counted under an "(other)" path */
	pg_atomic_uint64 folded_calls;	/* callers folded into "(other callers)" */
	pg_atomic_uint64 folded_unsummarized;	/* of those, not in heavy.h */
	pg_atomic_uint64 truncated;
	pg_atomic_uint64 flushes;
	pg_atomic_uint64 flush_failures;
	pg_atomic_uint64 last_flush_at; /* TimestampTz */
	pg_atomic_uint64 last_flush_us;
	/* caller_minute rows written by plain insert, update by TID, upsert */
	pg_atomic_uint64 caller_rows_inserted;
	pg_atomic_uint64 caller_rows_updated;
	pg_atomic_uint64 caller_rows_upserted;
	Size		shmem_bytes;
	uint64		hash_seed;		/* random, drawn when shared memory is made */

	/* hits that found neither an entry nor an overflow entry */
	pg_atomic_uint64 spill_calls;
	pg_atomic_uint64 spill_ok;
	pg_atomic_uint64 spill_client_errors;
	pg_atomic_uint64 spill_server_errors;
	pg_atomic_uint64 spill_lat_count;
	pg_atomic_uint64 spill_lat_sum_ns;
	pg_atomic_uint64 spill_lat_max_ns;

	/* worker handshake (mutex protects the fields below it) */
	slock_t		mutex;
	int			worker_pid;
	Latch	   *worker_latch;
	uint64		flush_requested;	/* request sequence */
	uint64		flush_done;		/* last request served */
	bool		last_flush_ok;
	int64		last_flush_entries;
	char		last_error[256];
	ConditionVariable flush_cv;
} ApicountShared;

extern ApicountShared *apicount_shared;

/* per-slot counts of slot i, and the minute's unflushed totals */
static inline pg_atomic_uint32 *
entry_slot_calls(CounterEntry *e, int i)
{
	return &e->cnt[i];
}

static inline pg_atomic_uint32 *
entry_slot_errors(CounterEntry *e, int i)
{
	return &e->cnt[apicount_shared->nslots + i];
}

static inline pg_atomic_uint32 *
entry_slot_ok(CounterEntry *e, int i)
{
	return &e->cnt[2 * apicount_shared->nslots + i];
}

static inline pg_atomic_uint32 *
entry_ok(CounterEntry *e)
{
	return &e->cnt[3 * apicount_shared->nslots];
}

static inline pg_atomic_uint32 *
entry_client_errors(CounterEntry *e)
{
	return &e->cnt[3 * apicount_shared->nslots + 1];
}

static inline pg_atomic_uint32 *
entry_server_errors(CounterEntry *e)
{
	return &e->cnt[3 * apicount_shared->nslots + 2];
}

static inline CounterTail *
entry_tail(CounterEntry *e)
{
	return (CounterTail *) ((char *) e + apicount_shared->tail_offset);
}

extern Size counters_shmem_size(void);
extern int	counters_lwlock_count(void);
extern void counters_shmem_init(void);
extern bool counters_ready(void);

/* hashes of ANY_METHOD, OTHER_PATH and OTHER_CALLERS (permanent strings) */
extern uint64 apicount_any_method_h;
extern uint64 apicount_other_path_h;
extern uint64 apicount_other_callers_h;

/* the API key ("*", "(other)") of a minute: the last resort of a hit */
extern void counters_catchall_key(int32 minute, CounterKey *key);

/* the API key of a key: its minute, method and path (flags KEY_API) */
extern void counters_api_key(const CounterKey *key, CounterKey *api);

/* the key (method, "(other)") of a minute (flags KEY_API | KEY_OVERFLOW) */
extern void counters_other_path_key(int32 minute, uint64 method_h,
									CounterKey *key);

/* the key's client_ip as an inet datum (key->ip_family must be set) */
extern Datum counters_key_inet(const CounterKey *key);

/*
 * 64-bit hash of a string, never 0.  Seeded with apicount_hash_seed, which
 * is random per server start, so that no client can choose a string whose
 * hash equals another's (a key whose hash is taken by another string is
 * counted as overflow).  Hashes live in shared memory only, never on disk.
 */
extern uint64 apicount_hash_seed;
extern uint64 apicount_hash_string(const char *s, size_t len);

/* where counters_add counted a delta's API-level counts */
typedef enum CountedUnder
{
	COUNTED_KEY,				/* the API's own entry */
	COUNTED_OVERFLOW,			/* an "(other)" path entry */
	COUNTED_SPILL				/* the spill counters (written at flush time) */
} CountedUnder;

/*
 * Add a committed delta for key (strings given for interning; hashcode is
 * etab_hash(key)): to its API entry, and for a caller key (KEY_TRACKED) to
 * its caller entry too, or to the API's "(other callers)" when no caller
 * entry has room.  Never throws: an API that finds no room is counted
 * under "(other)", and if even that has none, in the spill counters.
 * *api_method_h and *api_path_h tell the API the counts landed on (where
 * the delta's latencies belong).  An audited API (audited.h) and its
 * callers that find no room in their tier take room in the audited tier.
 */
extern CountedUnder counters_add(const CounterKey *key, uint32 hashcode,
						 const char *method, int method_len,
						 const char *path, int path_len,
						 const char *user, int user_len,
						 const CounterDelta *delta,
						 const LocalSlot *slots, bool audited,
						 uint64 *api_method_h, uint64 *api_path_h);

/* scans: take every partition lock in the given mode, in order */
extern void counters_lock_all(LWLockMode mode);
extern void counters_unlock_all(void);

/*
 * Worker only: remove an entry (caller holds no locks).  With only_if_idle
 * it is kept (and false returned) if it has unflushed hits.
 */
extern bool counters_remove(CounterEntry *entry, bool only_if_idle);

/* read an entry's unflushed deltas (atomically per field) */
extern void counters_read_delta(CounterEntry *entry, CounterDelta *d);

/* read an API entry's unflushed "(other callers)" counts */
extern void counters_read_other(CounterEntry *entry, CounterOther *o);

/* subtract a flushed snapshot from an entry's deltas */
extern void counters_subtract(CounterEntry *entry, const CounterDelta *d,
							  const CounterOther *o);

/* take and clear the spill counters */
extern void counters_take_spill(CounterDelta *d);
extern void counters_return_spill(const CounterDelta *d);

/* minute and slot arithmetic */
extern int32 apicount_minute_of(TimestampTz ts);

/* the first instant of an epoch minute (the inverse of apicount_minute_of) */
static inline TimestampTz
apicount_minute_start(int32 minute)
{
	return (TimestampTz) minute * USECS_PER_MINUTE;
}

/*
 * Range edges, clamped to int32 (infinities included): the first minute
 * starting at or after ts, and the last minute starting before ts.
 */
extern int32 apicount_minute_at_or_after(TimestampTz ts);
extern int32 apicount_minute_before(TimestampTz ts);
/* the slot of ts within its minute (apicount_minute_of(ts), given) */
extern int	apicount_slot_in_minute(TimestampTz ts, int32 minute);

#endif

/*-------------------------------------------------------------------------
 * pending.h
 *		Backend-local hits of the current transaction, per savepoint level.
 *
 * Hits are aggregated per key in backend memory and reach shared memory
 * only when the top transaction commits; a rolled-back savepoint drops its
 * level.  Memory rule: everything lives in per-level contexts under
 * TopMemoryContext and is freed at transaction end (one emptied level and
 * its first block of entries are kept for the next transaction).
 *-------------------------------------------------------------------------
 */
#ifndef APICOUNT_PENDING_H
#define APICOUNT_PENDING_H

#include "counters.h"
#include "normalize.h"

typedef struct PendingHit
{
	CounterKey	key;
	const char *method;
	int			method_len;
	const char *path;
	int			path_len;
	const char *user;			/* NULL when user_h == 0 */
	int			user_len;
	int			status;			/* 0: NULL */
	bool		has_latency;
	uint64		latency_ns;
	int			slot;
	int			truncated;		/* strings of this hit cut to their limit */
	bool		audited;		/* its path is audited (audited.h) */
	uint32		keyhash;		/* set by pending_prepare */
	bool		has_fold_hash;	/* set by pending_prepare for a row past
								 * the level's bound: */
	uint32		fold_hash;		/* the hash of the key it folds into */
	char		method_buf[APICOUNT_MAX_METHOD + 1];	/* method points here */
} PendingHit;

/*
 * pending_prepare hashes the hit's key and starts loading the index slot
 * it will probe; pending_add (after it, possibly many rows later, as a COPY
 * batch does) records the hit.
 */
extern void pending_prepare(PendingHit *hit);
extern void pending_add(const PendingHit *hit);

/*
 * COPY, between them: load what pending_add will read for a row that the
 * level's bound folds (stage 1: its entry; stage 2: its latency pairs).
 */
extern void pending_prefetch_fold(const PendingHit *hit, int stage);
extern void pending_register_callbacks(void);

#endif

/*-------------------------------------------------------------------------
 * readlock.h
 *		The lock that keeps query results free of double counting.
 *
 * Readers (the query functions) hold it in share mode from before their
 * rollup snapshot until they have read the live counters; the worker holds
 * it exclusively from just before its flush commits until it has
 * subtracted the flushed deltas.  So every reader sees a flush either
 * entirely in the rollups or entirely in shared memory.
 *
 * It is a session-level heavyweight lock; a reader's lock is released when
 * the (sub)transaction that took it aborts.  The worker only polls for it,
 * never queues, so readers never wait behind a flush that is itself waiting.
 *-------------------------------------------------------------------------
 */
#ifndef APICOUNT_READLOCK_H
#define APICOUNT_READLOCK_H

extern bool readlock_try_exclusive(int timeout_ms);
extern void readlock_release_exclusive(void);
extern void readlock_register_callbacks(void);

#endif

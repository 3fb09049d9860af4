/*-------------------------------------------------------------------------
 * entry_table.h
 *		The storage of the shared counter entries: a pool of fixed-size
 *		entries in one array, indexed per partition by open addressing.
 *
 * Why not dynahash: the sliding-window queries read every entry, and a
 * dynahash walk visits entries in hash order, one cache miss after another
 * (most of a 100,000-entry scan).  Here a scan walks the pool in memory
 * order.  Lookups probe the partition's index, an array of entry numbers
 * tagged with 6 bits of their key's hash.
 *
 * Locking rules (the partition LWLocks of counters.h):
 *	- etab_find: the key's partition lock, shared or exclusive;
 *	- etab_enter, etab_remove: the key's partition lock, exclusive;
 *	- etab_next (scans): every partition lock, in either mode, so that no
 *	  entry is created or removed during the scan.
 * The pool's free list has its own spinlock, taken inside a partition lock.
 *-------------------------------------------------------------------------
 */
#ifndef APICOUNT_ENTRY_TABLE_H
#define APICOUNT_ENTRY_TABLE_H

#include "counters.h"

extern Size etab_shmem_size(int64 capacity, Size entry_size);
extern void etab_shmem_init(int64 capacity, Size entry_size);
extern bool etab_ready(void);

extern uint32 etab_hash(const CounterKey *key);
extern CounterEntry *etab_find(const CounterKey *key, uint32 hashcode);

/* start loading the index slot a lookup of hashcode will read first */
extern void etab_prefetch(uint32 hashcode);

/* map the pool pages of the next n free entries (a large merge ahead) */
extern void etab_prefault_free(uint32 n);

/* find or create (zeroed but for the key); NULL when the pool is full */
extern CounterEntry *etab_enter(const CounterKey *key, uint32 hashcode,
								bool *found);
extern void etab_remove(CounterEntry *e, uint32 hashcode);

/* the next entry in use from *cursor on (start at 0), or NULL */
extern CounterEntry *etab_next(uint32 *cursor);

/* entries in use */
extern uint32 etab_count(void);

/* an entry's number in the pool (0 .. etab_pool_size() - 1) */
extern uint32 etab_number(const CounterEntry *e);
extern uint32 etab_pool_size(void);

#endif

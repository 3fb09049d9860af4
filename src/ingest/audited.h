/*-------------------------------------------------------------------------
 * audited.h
 *		Which APIs are audited: the path LIKE patterns of
 *		apicount.audited_apis, cached per backend.
 *
 * Every caller of an audited API is kept by name: when the caller tier is
 * full, its entry takes room in the audited tier (counters.h), and when
 * that is full too, the worker fires an alert.  A backend reads the
 * patterns once, then again only after a transaction that changed the
 * table has committed (a trigger marks it; the commit bumps a generation
 * counter in shared memory that every hit reads with one atomic load).
 * Each path's answer is cached by the hash of the normalized path.
 * Memory: the patterns and the cache live in TopMemoryContext.
 *-------------------------------------------------------------------------
 */
#ifndef APICOUNT_AUDITED_H
#define APICOUNT_AUDITED_H

/* is this normalized path (hash path_h) audited?  May read the table. */
extern bool audited_path(uint64 path_h, const char *path, int path_len);

extern void audited_register_callbacks(void);

#endif

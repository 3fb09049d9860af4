/*-------------------------------------------------------------------------
 * flush.h
 *		Writing counters to the rollup tables (worker only).
 *-------------------------------------------------------------------------
 */
#ifndef APICOUNT_FLUSH_H
#define APICOUNT_FLUSH_H

/*
 * One flush: snapshot unflushed deltas, upsert them, subtract them.
 * Runs its own transaction; returns false (with errbuf filled) if the
 * flush failed, in which case every delta stays in shared memory.
 */
extern bool flush_counters(int64 *written, char *errbuf, int errlen);

/*
 * Free entries that are flushed and older than the live horizon; with
 * discard, free every entry (the extension was dropped).
 */
extern void flush_free_entries(bool discard);

/* without the extension: give the ring slots of past minutes to later ones */
extern void flush_discard_heavy(void);

/* set before the last flush at shutdown: write every summary of heavy callers */
extern bool flush_heavy_all;

/* delete rollup rows older than apicount.retention, in bounded batches */
extern void flush_apply_retention(void);

#endif

/*-------------------------------------------------------------------------
 * sources.h
 *		Positions of shipped access logs (apicount-ship), committed with the
 *		hits they cover and written by the worker with the rollups.
 *
 * apicount.ship_position() records a position as pending in the calling
 * transaction.  At commit, pending.c's merge of the transaction's hits
 * runs inside sources_commit_begin/sources_commit_end, which hold the
 * gate in share mode and apply the position after the hits.  The flush
 * takes its snapshot of counters and positions between
 * sources_snapshot_begin/sources_snapshot_end, which hold the gate
 * exclusively: a shipper's transaction is then either wholly in the
 * snapshot (hits and position) or wholly out of it, so a crash that loses
 * unflushed hits loses the position that covered them too.
 *-------------------------------------------------------------------------
 */
#ifndef APICOUNT_SOURCES_H
#define APICOUNT_SOURCES_H

#include "access/xact.h"

extern int	apicount_max_sources;

extern void sources_define_gucs(void);
extern Size sources_shmem_size(void);
extern void sources_shmem_request(void);
extern void sources_shmem_init(void);

/* transaction end, called by pending.c around its merge into shared memory */
extern void sources_commit_begin(void);
extern void sources_commit_end(void);
extern void sources_xact_end(XactEvent event);

/* the worker's flush (flush.c) */
extern void sources_snapshot_begin(void);
extern void sources_snapshot_end(void);
extern void sources_write_snapshot(void);	/* inside the flush transaction, SPI connected */
extern void sources_flushed(void);	/* after its commit */
extern void sources_discard(void);	/* the extension was dropped */

#endif

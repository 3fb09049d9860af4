/*-------------------------------------------------------------------------
 * worker.h
 *		The background worker and the flush handshake with backends.
 *-------------------------------------------------------------------------
 */
#ifndef APICOUNT_WORKER_H
#define APICOUNT_WORKER_H

extern void apicount_register_worker(void);
extern PGDLLEXPORT void apicount_worker_main(Datum main_arg);

/* backend side of apicount.flush(): request, wait, return entries written */
extern int64 worker_request_flush(void);

/* at CREATE EXTENSION: have the worker discard counts of a dropped install */
extern void worker_discard_stale(void);

#endif

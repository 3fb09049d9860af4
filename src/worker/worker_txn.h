/*-------------------------------------------------------------------------
 * worker_txn.h
 *		Run a piece of the worker's SQL work in its own transaction.
 *-------------------------------------------------------------------------
 */
#ifndef APICOUNT_WORKER_TXN_H
#define APICOUNT_WORKER_TXN_H

typedef void (*worker_txn_fn) (void *arg);

/*
 * Start a transaction, connect SPI, push a snapshot, call fn, commit.
 * An error is logged and the transaction aborted; returns false then.
 * Does nothing (returns false) unless the extension exists.
 */
extern bool worker_run_txn(const char *what, worker_txn_fn fn, void *arg);

#endif

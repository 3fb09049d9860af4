/*-------------------------------------------------------------------------
 * preload.h
 *		The guard every SQL entry point calls first.
 *-------------------------------------------------------------------------
 */
#ifndef APICOUNT_PRELOAD_H
#define APICOUNT_PRELOAD_H

/*
 * ERROR unless the library was preloaded (shared memory exists); on
 * CREATE EXTENSION, also unless this PostgreSQL major is supported.
 */
extern void apicount_require_preload(void);

#endif

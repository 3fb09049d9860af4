/*-------------------------------------------------------------------------
 * compat.h
 *		The differences between the PostgreSQL majors apicount builds on.
 *
 * Owns every PG_VERSION_NUM test of the sources except those of whole
 * functions whose signatures differ (the table access method's callbacks in
 * requests_am.c), which use the parameter types and macros defined here.
 * Built and tested: 15, 17, 18; 16 compiles through the 17 branches where
 * they agree (see README "Supported versions").  Include after postgres.h.
 *-------------------------------------------------------------------------
 */
#ifndef APICOUNT_COMPAT_H
#define APICOUNT_COMPAT_H

#if PG_VERSION_NUM < 150000
#error "apicount needs PostgreSQL 15 or later"
#endif

/*
 * The majors whose suites pass (README "Supported versions").  On a major
 * outside them the library may compile (19, as a check of what is coming),
 * but CREATE EXTENSION refuses with a message that says so
 * (apicount_require_supported_major in src/shmem/preload.c).  -D can narrow the range
 * to see that refusal on a supported major.
 */
#ifndef APICOUNT_PG_MAJOR_MIN
#define APICOUNT_PG_MAJOR_MIN	15
#endif
#ifndef APICOUNT_PG_MAJOR_MAX
#define APICOUNT_PG_MAJOR_MAX	18
#endif
#define APICOUNT_PG_MAJOR		(PG_VERSION_NUM / 10000)

/*
 * 16: the varlena macros (VARDATA_ANY, SET_VARSIZE, ...) moved from
 * postgres.h to varatt.h, which utils/inet.h's macros need but do not include
 */
#if PG_VERSION_NUM >= 160000
#include "varatt.h"
#endif

/*
 * 16: relation files are named by RelFileLocator (was RelFileNode), and the
 * table AM callback is relation_set_new_filelocator.
 */
#if PG_VERSION_NUM >= 160000
#define ApicountRelFile			RelFileLocator
#else
#define ApicountRelFile			RelFileNode
#endif

/* 16: tuple_update reports which indexes to update as TU_UpdateIndexes */
#if PG_VERSION_NUM >= 160000
#define ApicountUpdateIndexes	TU_UpdateIndexes
#else
#define ApicountUpdateIndexes	bool
#endif

/* 16: pgstat_fetch_stat_local_beentry became pgstat_get_local_beentry_by_index */
#if PG_VERSION_NUM >= 160000
#define apicount_local_beentry(i)	pgstat_get_local_beentry_by_index(i)
#else
#define apicount_local_beentry(i)	pgstat_fetch_stat_local_beentry(i)
#endif

/*
 * 18: a slot's copy_minimal_tuple and heap_form_minimal_tuple take the
 * number of bytes to reserve before the tuple (extra).
 */
#if PG_VERSION_NUM >= 180000
#define APICOUNT_MINTUP_EXTRA_PARAM	, Size extra
#define apicount_form_minimal_tuple(desc, values, isnull, extra) \
	heap_form_minimal_tuple((desc), (values), (isnull), (extra))
#else
#define APICOUNT_MINTUP_EXTRA_PARAM
#define apicount_form_minimal_tuple(desc, values, isnull, extra) \
	heap_form_minimal_tuple((desc), (values), (isnull))
#endif

#endif							/* APICOUNT_COMPAT_H */

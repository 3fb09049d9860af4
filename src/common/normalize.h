/*-------------------------------------------------------------------------
 * normalize.h
 *		Path and method normalization and validation for apicount.
 *
 * Pure C: no server headers beyond c.h, no allocation, no errors thrown.
 * Callers turn the result codes into ereport()s; fuzzers and unit tests
 * build this module alone.
 *-------------------------------------------------------------------------
 */
#ifndef APICOUNT_NORMALIZE_H
#define APICOUNT_NORMALIZE_H

#include <stddef.h>
#include <stdbool.h>

#define APICOUNT_MAX_PATH		256		/* bytes, after normalization */
#define APICOUNT_MAX_USER		128		/* bytes */
#define APICOUNT_MAX_METHOD		16		/* characters (ASCII) */

typedef enum NormResult
{
	NORM_OK = 0,
	NORM_EMPTY,					/* nothing left */
	NORM_CONTROL_CHAR,			/* byte < 0x20 or 0x7f */
	NORM_BAD_TOKEN,				/* method: not an HTTP token */
	NORM_TOO_LONG				/* method longer than APICOUNT_MAX_METHOD */
} NormResult;

/*
 * Normalize a request path into out, which must hold 3 * len + 4 bytes: a
 * segment of one byte becomes ":id" (3 bytes), and each segment is copied
 * before it is found to be an id.  The result is NUL-terminated.  If
 * normalize is false only validation is done and the path copied.
 * *outlen receives the length written.
 */
extern NormResult apicount_normalize_path(const char *in, size_t len,
										  bool normalize,
										  char *out, size_t *outlen);

/* Upper-case and validate an HTTP method token; out holds 17 bytes. */
extern NormResult apicount_normalize_method(const char *in, size_t len,
											char *out, size_t *outlen);

/* Reject control characters (used for user ids). */
extern NormResult apicount_check_text(const char *in, size_t len);

/*
 * Length of the longest prefix of s (len bytes, valid UTF-8) that is at
 * most max bytes and ends at a character boundary.
 */
extern size_t apicount_clip_utf8(const char *s, size_t len, size_t max);

/* Is this segment an id (all digits, a UUID, or >= 16 hex chars)? */
extern bool apicount_segment_is_id(const char *seg, size_t len);

#endif							/* APICOUNT_NORMALIZE_H */

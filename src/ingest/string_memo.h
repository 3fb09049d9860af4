/*-------------------------------------------------------------------------
 * string_memo.h
 *		Backend-local memo of recently seen methods and paths: the string as
 *		sent -> its normalized form and that form's hash.
 *-------------------------------------------------------------------------
 */
#ifndef APICOUNT_STRING_MEMO_H
#define APICOUNT_STRING_MEMO_H

/* strings longer than this (as sent or normalized) are never memoized */
#define MEMO_MAX_LEN	64

typedef struct MemoHit
{
	const char *norm;			/* valid until the next memo_remember_* */
	int			norm_len;
	uint64		hash;
} MemoHit;

/*
 * Look a method or a path up by its bytes as sent (for a path, with the
 * normalize setting in force); true and *hit filled if it is there.
 */
extern bool memo_method(const char *raw, int len, MemoHit *hit);
extern bool memo_path(const char *raw, int len, bool normalized, MemoHit *hit);

/* remember what normalizing and hashing a string gave */
extern void memo_remember_method(const char *raw, int len, const char *norm,
								 int norm_len, uint64 hash);
extern void memo_remember_path(const char *raw, int len, bool normalized,
							   const char *norm, int norm_len, uint64 hash);

#endif

/*-------------------------------------------------------------------------
 * strtab.h
 *		Shared string table: methods, paths and user ids of live entries.
 *
 * Each distinct string is stored once, keyed by its 64-bit hash, with a
 * reference count (one per counter entry that uses it).  A hash shared by
 * two different strings is refused (the hit goes to the overflow entry),
 * so a collision can never merge two keys.
 *
 * Locking rules: STRTAB_PARTITIONS LWLocks.  Lookup and reference taking
 * run under the partition lock in shared mode; inserting and removing a
 * string take it exclusively.  The byte arena has its own spinlock, taken
 * only while holding an exclusive partition lock.
 *-------------------------------------------------------------------------
 */
#ifndef APICOUNT_STRTAB_H
#define APICOUNT_STRTAB_H

#define STRTAB_PARTITIONS	16

/*
 * capacity: strings any reference may insert; reserve: more strings that
 * only references made with strtab_use_reserve set may insert (the callers
 * of audited APIs, counters.h).
 */
extern Size strtab_shmem_size(int64 capacity);
extern void strtab_shmem_init(int64 capacity, int64 reserve,
							  LWLockPadded *locks);
extern bool strtab_use_reserve;

/*
 * Take a reference to string s (hash h), inserting it if needed.  Returns
 * false when the table or arena is full or h belongs to another string.
 * h == 0 (NULL string) always succeeds and takes nothing.
 */
extern bool strtab_ref(uint64 h, const char *s, int len);
extern void strtab_unref(uint64 h);

/*
 * A batch of references (one commit's merge): between begin and end, a
 * string referenced more than once is pinned by the batch, and its further
 * references cost one atomic add.  The strings passed to strtab_ref must
 * stay valid until strtab_batch_end, which gives the pins back.  Neither
 * call can fail or allocate.
 */
extern void strtab_batch_begin(void);
extern void strtab_batch_end(void);

/*
 * Copy the string for h into buf (size bufsize, NUL-terminated); returns
 * its length, or -1 if h is not present.  Callers hold a reference.
 */
extern int	strtab_get(uint64 h, char *buf, int bufsize);

/* the string for h as a palloc'd text, or NULL if h is not present */
extern text *strtab_get_text(uint64 h);

/* distinct strings held, and how many the table can hold */
extern int64 strtab_count(void);
extern int64 strtab_capacity(void);

#endif

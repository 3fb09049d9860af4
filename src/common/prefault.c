/*-------------------------------------------------------------------------
 * prefault.c
 *		Map a range of memory about to be written, in one system call
 *		(see prefault.h).
 *
 * Memory rule: only for memory the caller owns and is about to write
 * (populating a page allocates it, as writing it would); the range is
 * shrunk to whole pages inside it, so no byte outside it is mapped.  A
 * large allocation is palloc'd with up to 2 MB of slack before its aligned
 * start; only the allocator's headers and the word just before the aligned
 * start (the palloc'd pointer, for prefault_free_large) are written there.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#ifndef WIN32
#include <errno.h>
#include <sys/mman.h>
#include <unistd.h>
#endif

#include "prefault.h"

/* C libraries older than glibc 2.35 lack the name; Linux 5.14 has it */
#if defined(__linux__) && !defined(MADV_POPULATE_WRITE)
#define MADV_POPULATE_WRITE 23
#endif

#ifdef MADV_POPULATE_WRITE
/*
 * Cleared at the first EINVAL: the kernel does not know the advice (or the
 * mapping does not allow it); this backend then stops asking.
 */
static bool populate_works = true;
#endif

void
prefault_for_write(void *start, Size len)
{
#ifdef MADV_POPULATE_WRITE
	static Size page_size = 0;
	uintptr_t	from;
	uintptr_t	to;

	if (!populate_works || len < PREFAULT_MIN_BYTES)
		return;
	if (page_size == 0)
	{
		long		ps = sysconf(_SC_PAGESIZE);

		page_size = ps > 0 ? (Size) ps : 4096;
	}
	from = TYPEALIGN(page_size, (uintptr_t) start);
	to = TYPEALIGN_DOWN(page_size, (uintptr_t) start + len);
	if (to <= from)
		return;
	/* other failures (a signal, no memory) leave the pages to fault in */
	if (madvise((void *) from, to - from, MADV_POPULATE_WRITE) != 0 &&
		errno == EINVAL)
		populate_works = false;
#endif
}

/* the palloc'd chunk a prefault_alloc_large pointer came from */
#define RAW_POINTER_ROOM	MAXALIGN(sizeof(void *))

void *
prefault_alloc_large(MemoryContext cxt, Size size)
{
#ifdef MADV_HUGEPAGE
	bool		huge = size >= PREFAULT_HUGE_BYTES;
#else
	bool		huge = false;	/* no 2 MB alignment to pay for */
#endif
	char	   *raw;
	char	   *p;

	raw = MemoryContextAllocExtended(cxt, size + RAW_POINTER_ROOM +
									 (huge ? PREFAULT_HUGE_BYTES : 0),
									 MCXT_ALLOC_HUGE);
	p = raw + RAW_POINTER_ROOM;
	if (huge)
		p = (char *) TYPEALIGN(PREFAULT_HUGE_BYTES, (uintptr_t) p);
	((void **) p)[-1] = raw;
#ifdef MADV_HUGEPAGE
	/* a hint: refused (THP off, EINVAL) or not, the memory is the same */
	if (huge)
		(void) madvise(p, TYPEALIGN_DOWN(PREFAULT_HUGE_BYTES, size),
					   MADV_HUGEPAGE);
#endif
	prefault_for_write(p, size);
	return p;
}

void
prefault_free_large(void *p)
{
	pfree(((void **) p)[-1]);
}

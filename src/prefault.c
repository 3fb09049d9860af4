/*-------------------------------------------------------------------------
 * prefault.c
 *		Map a range of memory about to be written, in one system call
 *		(see prefault.h).
 *
 * Memory rule: only for memory the caller owns and is about to write
 * (populating a page allocates it, as writing it would); the range is
 * shrunk to whole pages inside it, so no byte outside it is mapped.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <errno.h>
#include <sys/mman.h>
#include <unistd.h>

#include "prefault.h"

#ifdef MADV_POPULATE_WRITE
/* cleared when the kernel does not know MADV_POPULATE_WRITE (EINVAL) */
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

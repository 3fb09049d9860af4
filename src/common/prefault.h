/*-------------------------------------------------------------------------
 * prefault.h
 *		Map a range of memory about to be written, in one system call.
 *
 * A bulk load (a COPY of a million rows) writes tens of megabytes that the
 * backend has not touched yet: the blocks of its pending counts, and the
 * shared entries it creates at commit.  Touched one page at a time, each
 * 4 kB page costs a page fault (several microseconds in a virtual machine);
 * madvise(MADV_POPULATE_WRITE) maps the whole range at once.  Only a hint:
 * where the kernel (before Linux 5.14) or the platform lacks it, nothing
 * happens and the pages fault in as they are written.  (On this project's
 * 2-core virtual machine the first write to a 4 kB page costs about 5 us
 * even once populated, and to a populated 2 MB page next to nothing: hence
 * prefault_alloc_large.)
 *-------------------------------------------------------------------------
 */
#ifndef APICOUNT_PREFAULT_H
#define APICOUNT_PREFAULT_H

/* ranges smaller than this are left to fault in page by page */
#define PREFAULT_MIN_BYTES		((Size) 256 * 1024)

/* a transparent huge page (x86-64, arm64 with 4 kB pages) */
#define PREFAULT_HUGE_BYTES		((Size) 2 * 1024 * 1024)

extern void prefault_for_write(void *start, Size len);

/*
 * size bytes from cxt, mapped at once (as prefault_for_write), and when
 * size is at least PREFAULT_HUGE_BYTES starting at a 2 MB boundary and
 * advised for transparent huge pages (madvise(MADV_HUGEPAGE): used where
 * /sys/kernel/mm/transparent_hugepage/enabled is "always" or "madvise").
 * One 2 MB page costs the kernel, and a virtual machine's host, one
 * mapping where 512 small pages cost 512.  Give it back with
 * prefault_free_large (or with its memory context).
 */
extern void *prefault_alloc_large(MemoryContext cxt, Size size);
extern void prefault_free_large(void *p);

#endif

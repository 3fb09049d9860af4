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
 * happens and the pages fault in as they are written.
 *-------------------------------------------------------------------------
 */
#ifndef APICOUNT_PREFAULT_H
#define APICOUNT_PREFAULT_H

/* ranges smaller than this are left to fault in page by page */
#define PREFAULT_MIN_BYTES		((Size) 256 * 1024)

extern void prefault_for_write(void *start, Size len);

#endif

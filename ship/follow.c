/*
 * follow.c — the file follower: lines of one log path, across rotations.
 *
 * Owns file identity and rotation.  A file is known by device, inode and a
 * hash of its first bytes (up to 1 kB: a reused inode with other content is
 * another file).  At the end of the data it checks:
 *  - copytruncate: the file is shorter than the offset, or its first bytes
 *    changed.  The rest of the old content is in the copy, a file beside it
 *    with the same first bytes: finish that copy from the offset, then start
 *    the truncated file again at 0;
 *  - rename (logrotate's default, nginx -s reopen): the path names another
 *    file.  Finish the old one, until it has been quiet for rotate_wait_ms,
 *    then follow the path from 0.
 * Only complete lines are handed out, and the offset moves past a line when
 * it is handed out, so the offset is always at the start of a line.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdarg.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "follow.h"

#define PREFIX_MAX	1024
#define READ_CHUNK	(1024 * 1024)

enum
{
	NEXT_PATH_AT_0, NEXT_FILE_AT_OFFSET
};

int64_t
now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void
ship_log(const char *fmt,...)
{
	va_list		ap;
	time_t		t = time(NULL);
	struct tm	tm;
	char		stamp[32];

	gmtime_r(&t, &tm);
	strftime(stamp, sizeof(stamp), "%Y-%m-%dT%H:%M:%SZ", &tm);
	fprintf(stderr, "%s apicount-ship: ", stamp);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

void
file_id_format(const FileIdent *id, char *out)
{
	snprintf(out, FILE_ID_LEN, "%llx:%llx:%d:%016llx",
			 (unsigned long long) id->dev, (unsigned long long) id->ino,
			 id->plen, (unsigned long long) id->phash);
}

bool
file_id_parse(const char *s, FileIdent *id)
{
	unsigned long long dev, ino, h;
	int			plen;
	int			used = 0;

	if (s == NULL ||
		sscanf(s, "%llx:%llx:%d:%llx%n", &dev, &ino, &plen, &h, &used) != 4 ||
		s[used] != '\0' || plen < 0 || plen > PREFIX_MAX)
		return false;
	id->dev = dev;
	id->ino = ino;
	id->plen = plen;
	id->phash = h;
	return true;
}

/* FNV-1a of the first plen bytes; false when the file is shorter */
static bool
prefix_hash(int fd, int plen, uint64_t *h)
{
	unsigned char b[PREFIX_MAX];
	ssize_t		n = plen > 0 ? pread(fd, b, plen, 0) : 0;
	uint64_t	v = 14695981039346656037ULL;
	int			i;

	if (n != plen)
		return false;
	for (i = 0; i < plen; i++)
		v = (v ^ b[i]) * 1099511628211ULL;
	*h = v;
	return true;
}

static bool
ident_of(int fd, FileIdent *id, off_t *size)
{
	struct stat st;

	if (fstat(fd, &st) != 0)
		return false;
	id->dev = st.st_dev;
	id->ino = st.st_ino;
	id->plen = st.st_size < PREFIX_MAX ? (int) st.st_size : PREFIX_MAX;
	if (size)
		*size = st.st_size;
	return prefix_hash(fd, id->plen, &id->phash);
}

/* does the file open at fd start with the bytes id hashed? */
static bool
same_prefix(int fd, const FileIdent *id)
{
	uint64_t	h;

	return prefix_hash(fd, id->plen, &h) && h == id->phash;
}

void
follow_init(Follower *f, const char *path, bool follow, int rotate_wait_ms)
{
	memset(f, 0, sizeof(*f));
	f->path = strdup(path);
	f->fd = -1;
	f->follow = follow;
	f->rotate_wait_ms = rotate_wait_ms;
}

void
follow_close(Follower *f)
{
	if (f->fd >= 0)
		close(f->fd);
	f->fd = -1;
	f->buf.len = 0;
	f->bstart = 0;
}

/* lines before offset (for the line numbers of the reject file) */
static int64_t
count_lines(int fd, int64_t offset)
{
	char		b[65536];
	int64_t		n = 0;
	int64_t		pos = 0;

	while (pos < offset)
	{
		ssize_t		r = pread(fd, b, offset - pos < (int64_t) sizeof(b) ?
							  (size_t) (offset - pos) : sizeof(b), pos);

		if (r <= 0)
			break;
		for (ssize_t i = 0; i < r; i++)
			n += b[i] == '\n';
		pos += r;
	}
	return n;
}

/* open name at offset; false (errno set) when it cannot be opened */
static bool
open_at(Follower *f, const char *name, int64_t offset, bool draining)
{
	int			fd = open(name, O_RDONLY | O_CLOEXEC);

	if (fd < 0)
		return false;
	follow_close(f);
	f->fd = fd;
	free(f->name);
	f->name = strdup(name);
	ident_of(fd, &f->id, NULL);
	if (lseek(fd, offset, SEEK_SET) < 0)
		offset = 0;
	f->offset = offset;
	f->lineno = offset > 0 ? count_lines(fd, offset) : 0;
	f->draining = draining;
	f->quiet_since_ms = now_ms();
	f->eof_seen = false;
	return true;
}

/*
 * A file beside the path (same directory, name starting with the path's
 * base name) with the identity's first bytes and at least offset bytes:
 * same inode too when same_inode, another inode (a copy) when not.
 */
static char *
find_sibling(const char *path, const FileIdent *id, int64_t offset, bool same_inode)
{
	char	   *d1 = strdup(path);
	char	   *d2 = strdup(path);
	const char *dir = dirname(d1);
	const char *base = basename(d2);
	size_t		blen = strlen(base);
	DIR		   *dp = opendir(dir);
	struct dirent *de;
	char	   *found = NULL;

	while (dp != NULL && found == NULL && (de = readdir(dp)) != NULL)
	{
		char		full[4096];
		struct stat st;
		int			fd;

		if (strncmp(de->d_name, base, blen) != 0)
			continue;
		snprintf(full, sizeof(full), "%s/%s", dir, de->d_name);
		if (stat(full, &st) != 0 || !S_ISREG(st.st_mode) || st.st_size < offset)
			continue;
		if (same_inode != (st.st_dev == id->dev && st.st_ino == id->ino))
			continue;
		if (!same_inode && id->plen == 0)
			continue;			/* an empty prefix proves nothing */
		fd = open(full, O_RDONLY | O_CLOEXEC);
		if (fd < 0)
			continue;
		if (same_prefix(fd, id))
			found = strdup(full);
		close(fd);
	}
	if (dp)
		closedir(dp);
	free(d1);
	free(d2);
	return found;
}

void
follow_open(Follower *f, const char *file_id, int64_t offset)
{
	FileIdent	want;
	char	   *other;
	struct stat st;

	follow_close(f);
	if (file_id == NULL)
	{
		if (!open_at(f, f->path, 0, false))
			ship_log("%s: cannot open (%s); waiting for it", f->path, strerror(errno));
		return;
	}
	if (!file_id_parse(file_id, &want))
	{
		ship_log("%s: committed file id \"%s\" is not one of mine: starting at 0",
				 f->path, file_id);
		open_at(f, f->path, 0, false);
		return;
	}
	/* the path itself, not truncated */
	if (stat(f->path, &st) == 0 && st.st_dev == want.dev &&
		st.st_ino == want.ino && st.st_size >= offset)
	{
		int			fd = open(f->path, O_RDONLY | O_CLOEXEC);
		bool		same = fd >= 0 && same_prefix(fd, &want);

		if (fd >= 0)
			close(fd);
		if (same && open_at(f, f->path, offset, false))
			return;
	}
	/* renamed, or copied then truncated: finish it, then the path from 0 */
	if ((other = find_sibling(f->path, &want, offset, true)) != NULL ||
		(other = find_sibling(f->path, &want, offset, false)) != NULL)
	{
		if (open_at(f, other, offset, true))
		{
			ship_log("%s: resuming rotated file %s at offset %lld", f->path,
					 other, (long long) offset);
			free(other);
			return;
		}
		free(other);
	}
	ship_log("%s: file %s of the committed position (offset %lld) is gone: starting the current file at 0",
			 f->path, file_id, (long long) offset);
	if (!open_at(f, f->path, 0, false))
		ship_log("%s: cannot open (%s); waiting for it", f->path, strerror(errno));
}

/* after the batch of the old file is shipped */
void
follow_switch(Follower *f)
{
	if (f->next_kind == NEXT_FILE_AT_OFFSET && f->next_name != NULL)
	{
		if (!open_at(f, f->next_name, f->next_offset, true))
			open_at(f, f->path, 0, false);
	}
	else if (!open_at(f, f->path, 0, false))
	{
		follow_close(f);
		ship_log("%s: cannot open (%s); waiting for it", f->path, strerror(errno));
	}
	free(f->next_name);
	f->next_name = NULL;
}

static FollowResult
plan_switch(Follower *f, int kind, char *name, int64_t offset)
{
	f->next_kind = kind;
	free(f->next_name);
	f->next_name = name;
	f->next_offset = offset;
	return FOLLOW_SWITCH;
}

/* at the end of the data: rotation or truncation? */
static FollowResult
at_end(Follower *f)
{
	struct stat st;
	struct stat pst;
	int64_t		buffered = (int64_t) (f->buf.len - f->bstart);
	int64_t		now = now_ms();

	if (f->fd < 0)
	{
		/* the path did not exist: has it come? */
		if (access(f->path, R_OK) == 0)
			return plan_switch(f, NEXT_PATH_AT_0, NULL, 0);
		return FOLLOW_EOF;
	}
	if (fstat(f->fd, &st) != 0)
		return FOLLOW_EOF;

	/* copytruncate */
	if (st.st_size < f->offset + buffered ||
		(st.st_size >= f->id.plen && !same_prefix(f->fd, &f->id)))
	{
		char	   *copy = find_sibling(f->path, &f->id, f->offset, false);

		if (copy != NULL)
		{
			ship_log("%s: truncated (copytruncate): finishing the copy %s from offset %lld",
					 f->name, copy, (long long) f->offset);
			return plan_switch(f, NEXT_FILE_AT_OFFSET, copy, f->offset);
		}
		ship_log("%s: truncated, and no copy of it found: lines after offset %lld may be lost; starting again at 0",
				 f->name, (long long) f->offset);
		return plan_switch(f, NEXT_PATH_AT_0, NULL, 0);
	}

	/* a longer prefix makes the identity stronger */
	if (f->id.plen < PREFIX_MAX && st.st_size > f->id.plen && !f->draining)
	{
		FileIdent	id;

		if (ident_of(f->fd, &id, NULL))
			f->id = id;
	}

	if (!f->draining)
	{
		if (stat(f->path, &pst) == 0 &&
			(pst.st_dev != st.st_dev || pst.st_ino != st.st_ino))
		{
			ship_log("%s: rotated (renamed): finishing the old file", f->path);
			f->draining = true;
			f->quiet_since_ms = now;
		}
		return FOLLOW_EOF;
	}

	/* draining a rotated file: leave it once it has been quiet long enough */
	if (!f->follow || now - f->quiet_since_ms >= f->rotate_wait_ms)
	{
		if (stat(f->path, &pst) == 0 &&
			(pst.st_dev != st.st_dev || pst.st_ino != st.st_ino || strcmp(f->name, f->path) != 0))
			return plan_switch(f, NEXT_PATH_AT_0, NULL, 0);
		if (!f->follow)
			return plan_switch(f, NEXT_PATH_AT_0, NULL, 0);
	}
	return FOLLOW_EOF;
}

FollowResult
follow_next(Follower *f, const char **line, size_t *len)
{
	for (;;)
	{
		char	   *start = f->buf.data + f->bstart;
		size_t		avail = f->buf.len - f->bstart;
		char	   *nl = avail ? memchr(start, '\n', avail) : NULL;
		ssize_t		n;

		if (nl != NULL)
		{
			*line = start;
			*len = nl - start;
			f->bstart += *len + 1;
			f->offset += *len + 1;
			f->lineno++;
			return FOLLOW_LINE;
		}
		if (f->fd < 0)
			return at_end(f);

		/* keep the partial line, read more after it */
		if (f->bstart > 0)
		{
			memmove(f->buf.data, start, avail);
			f->buf.len = avail;
			f->bstart = 0;
		}
		buf_reserve(&f->buf, READ_CHUNK);
		n = read(f->fd, f->buf.data + f->buf.len, READ_CHUNK);
		if (n > 0)
		{
			f->buf.len += n;
			f->quiet_since_ms = now_ms();
			continue;
		}
		if (n < 0 && errno == EINTR)
			continue;

		/* the end of the data: a rotated file's last line may lack its newline */
		{
			FollowResult r = at_end(f);

			if (r == FOLLOW_SWITCH && f->buf.len > f->bstart &&
				f->next_kind == 0 && f->draining)
			{
				*line = f->buf.data + f->bstart;
				*len = f->buf.len - f->bstart;
				f->offset += *len;
				f->bstart = f->buf.len;
				f->lineno++;
				return FOLLOW_LINE;	/* the switch comes at the next call */
			}
			return r;
		}
	}
}

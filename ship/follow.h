/*
 * follow.h — reads one followed log path line by line, across rotations.
 */
#ifndef SHIP_FOLLOW_H
#define SHIP_FOLLOW_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "buf.h"

#define FILE_ID_LEN 80

/* a file: device and inode, and a hash of its first plen bytes */
typedef struct FileIdent
{
	uint64_t	dev;
	uint64_t	ino;
	int			plen;
	uint64_t	phash;
} FileIdent;

typedef enum FollowResult
{
	FOLLOW_LINE,				/* a line */
	FOLLOW_EOF,					/* nothing more now */
	FOLLOW_SWITCH				/* this file is done: ship, then follow_switch() */
} FollowResult;

typedef struct Follower
{
	char	   *path;			/* the followed path */
	char	   *name;			/* the file open: path, or a rotated one */
	int			fd;
	FileIdent	id;
	int64_t		offset;			/* of the next line not handed out */
	int64_t		lineno;			/* of the last line handed out */
	bool		draining;		/* name is not what path is now: finish it */
	bool		follow;			/* --follow: wait for rotations */
	int			rotate_wait_ms; /* quiet time before leaving a rotated file */
	int64_t		quiet_since_ms;
	int			next_kind;		/* what follow_switch opens (follow.c) */
	char	   *next_name;
	int64_t		next_offset;
	Buf			buf;			/* data read past offset */
	size_t		bstart;
	bool		eof_seen;
} Follower;

extern void follow_init(Follower *f, const char *path, bool follow, int rotate_wait_ms);

/*
 * Open the file a committed position names (file_id NULL: none): the path,
 * or a rotated or copied file found beside it.  Logs what it did.
 */
extern void follow_open(Follower *f, const char *file_id, int64_t offset);
extern FollowResult follow_next(Follower *f, const char **line, size_t *len);
extern void follow_switch(Follower *f);
extern void follow_close(Follower *f);

extern void file_id_format(const FileIdent *id, char *out);
extern bool file_id_parse(const char *s, FileIdent *id);

extern int64_t now_ms(void);
extern void ship_log(const char *fmt,...) __attribute__((format(printf, 1, 2)));

#endif

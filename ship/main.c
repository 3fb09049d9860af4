/*
 * main.c — apicount-ship: options, signals and the shipping loop.
 *
 * Owns the order of things: connect, read each source's committed position
 * (apicount.sources), open its file there (follow.c), parse lines into
 * batches (parse_*.c, row.c, batch.c), ship each batch with its position in
 * one transaction (send.c), write its rejected lines after the commit.  On
 * any failure: reconnect with backoff and start again from the positions
 * the server has, which is what makes every line count exactly once.
 */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "batch.h"
#include "follow.h"
#include "parse_combined.h"
#include "parse_json.h"
#include "row.h"
#include "send.h"

typedef struct Source
{
	char	   *name;			/* in apicount.sources */
	Follower	f;
	Batch		batch;
	Position	committed;
	bool		done;			/* without --follow: read to its end */
	int64_t		shipped;		/* lines counted by this run */
	int64_t		rejected;
} Source;

static volatile sig_atomic_t stop_flag = 0;
static volatile int stop_int = 0;

static void
on_signal(int sig)
{
	(void) sig;
	stop_flag = 1;
	stop_int = 1;
}

static void
usage(FILE *out)
{
	fprintf(out,
			"apicount-ship ships web server access logs into apicount, each line exactly once.\n"
			"\n"
			"Usage: apicount-ship [OPTION]... --format=FMT FILE...\n"
			"\n"
			"  -d, --dbname=CONNINFO    database to connect to (libpq's PG* variables apply)\n"
			"  -f, --format=FMT         combined (Apache/nginx, optional trailing $request_time)\n"
			"                           or json (one object per line, nginx escape=json)\n"
			"  -s, --source=NAME        source name in apicount.sources (default: the file's\n"
			"                           path; NAME:path with several files)\n"
			"  -F, --follow             keep reading as files grow and rotate, until SIGTERM\n"
			"  -r, --reject-file=PATH   append bad lines there as file:line: reason: line\n"
			"      --field=NAME=KEY     json: the key of NAME (time, client, user, method,\n"
			"                           path, status, request_time)\n"
			"      --batch-lines=N      lines per transaction at most (default 5000)\n"
			"      --batch-ms=N         ship a batch this long after its first line (200)\n"
			"      --rotate-wait-ms=N   quiet time before leaving a rotated file (1000)\n"
			"  -n, --dry-run            parse and check only: no connection, nothing shipped\n"
			"  -v, --verbose            log every batch\n"
			"  -h, --help               this help\n"
			"\n"
			"Without --follow, reads the files to their end and exits 0.  Needs the role\n"
			"apicount_writer.  Exit status: 0 done, 1 fatal error, 2 bad usage.\n");
}

static void
write_rejects(FILE *rf, Batch *b)
{
	if (rf != NULL && b->rejects.len > 0)
	{
		fwrite(b->rejects.data, 1, b->rejects.len, rf);
		fflush(rf);
	}
}

/* re-read every position from the server and reopen the files there */
static bool
resync(Sender *snd, Source *src, int n)
{
	int			i;

	for (i = 0; i < n; i++)
	{
		Position	pos;

		if (sender_position(snd, src[i].name, &pos) != SHIP_OK)
			return false;
		src[i].committed = pos;
		batch_clear(&src[i].batch);
		follow_open(&src[i].f, pos.valid ? pos.file_id : NULL, pos.offset);
		src[i].done = false;
	}
	return true;
}

int
main(int argc, char **argv)
{
	static const struct option opts[] = {
		{"dbname", required_argument, NULL, 'd'},
		{"format", required_argument, NULL, 'f'},
		{"source", required_argument, NULL, 's'},
		{"follow", no_argument, NULL, 'F'},
		{"reject-file", required_argument, NULL, 'r'},
		{"field", required_argument, NULL, 1},
		{"batch-lines", required_argument, NULL, 2},
		{"batch-ms", required_argument, NULL, 3},
		{"rotate-wait-ms", required_argument, NULL, 4},
		{"verbose", no_argument, NULL, 'v'},
		{"dry-run", no_argument, NULL, 'n'},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0}
	};
	const char *conninfo = "";
	const char *format = NULL;
	const char *source = NULL;
	const char *reject_path = NULL;
	bool		follow = false;
	bool		verbose = false;
	bool		dry_run = false;
	long		batch_lines = 5000;
	long		batch_ms = 200;
	long		rotate_wait_ms = 1000;
	JsonFormat	jf;
	int			c;
	int			nsrc;
	Source	   *src;
	Sender		snd;
	FILE	   *rf = NULL;
	struct sigaction sa;
	int			i;
	int			status = 0;
	bool		stopping = false;
	int			failures = 0;	/* batches failed in a row */

	json_format_init(&jf);
	while ((c = getopt_long(argc, argv, "d:f:s:Fr:vnh", opts, NULL)) != -1)
	{
		char	   *end;

		switch (c)
		{
			case 'd':
				conninfo = optarg;
				break;
			case 'f':
				format = optarg;
				break;
			case 's':
				source = optarg;
				break;
			case 'F':
				follow = true;
				break;
			case 'r':
				reject_path = optarg;
				break;
			case 'v':
				verbose = true;
				break;
			case 'n':
				dry_run = true;
				break;
			case 1:
				if (!json_format_set(&jf, optarg))
				{
					fprintf(stderr, "apicount-ship: --field wants NAME=KEY with NAME one of time, client, user, method, path, status, request_time\n");
					return 2;
				}
				break;
			case 2:
			case 3:
			case 4:
				errno = 0;
				{
					long		v = strtol(optarg, &end, 10);

					if (errno || *end || v < 1 || v > 10000000)
					{
						fprintf(stderr, "apicount-ship: %s wants a number from 1 to 10000000\n",
								c == 2 ? "--batch-lines" : c == 3 ? "--batch-ms" : "--rotate-wait-ms");
						return 2;
					}
					if (c == 2)
						batch_lines = v;
					else if (c == 3)
						batch_ms = v;
					else
						rotate_wait_ms = v;
				}
				break;
			case 'h':
				usage(stdout);
				return 0;
			default:
				usage(stderr);
				return 2;
		}
	}
	if (format == NULL || (strcmp(format, "combined") != 0 && strcmp(format, "json") != 0) ||
		optind >= argc)
	{
		fprintf(stderr, "apicount-ship: %s\n", optind >= argc ? "no FILE given" :
				"--format must be combined or json");
		usage(stderr);
		return 2;
	}

	nsrc = argc - optind;
	src = calloc(nsrc, sizeof(Source));
	for (i = 0; i < nsrc; i++)
	{
		char		abs[PATH_MAX];
		const char *path = argv[optind + i];
		char	   *name;

		if (realpath(path, abs) == NULL)
			snprintf(abs, sizeof(abs), "%s", path);	/* may come later */
		if (source != NULL && nsrc == 1)
			name = strdup(source);
		else
		{
			name = malloc(strlen(abs) + (source ? strlen(source) : 0) + 2);
			sprintf(name, "%s%s%s", source ? source : "", source ? ":" : "", abs);
		}
		src[i].name = name;
		follow_init(&src[i].f, abs, follow, (int) rotate_wait_ms);
	}
	if (reject_path != NULL && (rf = fopen(reject_path, "a")) == NULL)
	{
		fprintf(stderr, "apicount-ship: cannot open %s: %s\n", reject_path, strerror(errno));
		return 1;
	}

	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_signal;
	sa.sa_flags = SA_RESTART;
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);

	memset(&snd, 0, sizeof(snd));
	snd.conninfo = conninfo;
	snd.stop = &stop_int;

	if (dry_run)
	{
		/* the rules of a default server: retention 30 days, paths normalized */
		snd.retention_s = 30 * 86400;
		snd.normalize = 1;
		for (i = 0; i < nsrc; i++)
			follow_open(&src[i].f, NULL, 0);
		goto ship_loop;
	}

reconnect:
	if (failures > 0)
	{
		/* the same trouble again: back off, 100 ms doubling up to 5 s */
		int			ms = failures > 6 ? 5000 : 100 << (failures - 1);
		struct timespec ts = {ms / 1000, (long) (ms % 1000) * 1000000L};

		if (ms > 5000)
			ts.tv_sec = 5, ts.tv_nsec = 0;
		nanosleep(&ts, NULL);
	}
	if (!sender_connect(&snd))
	{
		if (stop_flag)
			goto finish;
		ship_log("connected, but cannot read apicount's settings: is the extension installed?");
		return 1;
	}
	if (!resync(&snd, src, nsrc))
	{
		if (PQstatus(snd.conn) == CONNECTION_OK)
			return 1;
		goto reconnect;
	}
	for (i = 0; i < nsrc; i++)
		if (src[i].committed.valid)
			ship_log("%s: from offset %lld of %s (%lld lines, %lld rejected so far)",
					 src[i].name, (long long) src[i].committed.offset,
					 src[i].f.name ? src[i].f.name : src[i].f.path,
					 (long long) src[i].committed.lines,
					 (long long) src[i].committed.rejected);

ship_loop:
	for (;;)
	{
		bool		progress = false;
		bool		all_done = true;
		RowRules	rules;

		rules_now(&snd, &rules);
		for (i = 0; i < nsrc; i++)
		{
			Source	   *s = &src[i];
			Batch	   *b = &s->batch;
			bool		ship = false;
			bool		do_switch = false;
			int			n = 0;

			if (s->done)
				continue;
			all_done = false;
			while (!stop_flag && b->nrows + b->nrejected < batch_lines && n < batch_lines)
			{
				const char *line;
				size_t		len;
				FollowResult r = follow_next(&s->f, &line, &len);
				LogRecord	rec;
				ParseError	err;

				if (r == FOLLOW_EOF)
				{
					if (!follow)
					{
						s->done = true;
						ship = true;
					}
					break;
				}
				if (r == FOLLOW_SWITCH)
				{
					do_switch = true;
					ship = true;
					break;
				}
				n++;
				progress = true;
				if (b->first_ms == 0)
					b->first_ms = now_ms();
				err = strcmp(format, "json") == 0 ? parse_json(&jf, line, len, &rec) :
					parse_combined(line, len, &rec);
				if (err == NULL)
					err = row_check(&rec, &rules);
				if (err == NULL)
				{
					int64_t		start = (int64_t) b->rows.len;

					row_append(&b->rows, &rec);
					batch_add_row(b, start, s->f.lineno);
				}
				else
					batch_reject(b, s->f.name, s->f.lineno, err, line, len);
				/* let the server count while the next lines are parsed */
				if (!dry_run && b->rows.len - b->sent >= STREAM_CHUNK &&
					sender_stream(&snd, b) != SHIP_OK)
				{
					ship_log("%s: batch not shipped: reconnecting, then resuming from the committed positions",
							 s->name);
					failures++;
					goto reconnect;
				}
				/* the batch ends where this line ends (its file: at shipping) */
				b->end_offset = s->f.offset;
			}
			if (b->nrows + b->nrejected >= batch_lines || stop_flag ||
				(b->first_ms != 0 && now_ms() - b->first_ms >= batch_ms))
				ship = true;
			if (ship && !batch_empty(b) && dry_run)
			{
				s->shipped += b->nrows;
				s->rejected += b->nrejected;
				write_rejects(rf, b);
				batch_clear(b);
			}
			else if (ship && !batch_empty(b))
			{
				Position	next;
				ShipResult	res;

				/* a batch holds lines of the open file only: a switch ships first */
				file_id_format(&s->f.id, b->file_id);
				res = sender_ship(&snd, s->name, b, &s->committed, &next, s->f.name);

				if (res == SHIP_FATAL)
				{
					status = 1;
					goto finish;
				}
				if (res == SHIP_RESYNC)
				{
					ship_log("%s: batch not shipped: reconnecting, then resuming from the committed positions",
							 s->name);
					failures++;
					goto reconnect;
				}
				failures = 0;
				write_rejects(rf, b);
				if (verbose)
					ship_log("%s: shipped %lld lines, %lld rejected, up to offset %lld of %s",
							 s->name, (long long) (next.lines - s->committed.lines),
							 (long long) (next.rejected - s->committed.rejected),
							 (long long) next.offset, s->f.name);
				s->shipped += next.lines - s->committed.lines;
				s->rejected += next.rejected - s->committed.rejected;
				s->committed = next;
				batch_clear(b);
			}
			if (do_switch)
			{
				follow_switch(&s->f);
				s->done = false;
			}
		}
		if (stop_flag)
		{
			/* one more pass ships what the others still hold, reading nothing */
			if (stopping)
				break;
			stopping = true;
			continue;
		}
		if (!follow && all_done)
			break;
		if (!progress)
		{
			struct timespec ts = {0, 20 * 1000000L};

			nanosleep(&ts, NULL);
		}
	}

finish:
	for (i = 0; i < nsrc; i++)
		ship_log("%s: %s: %lld lines counted, %lld rejected by this run", src[i].name,
				 status ? "stopped on an error" : "done",
				 (long long) src[i].shipped, (long long) src[i].rejected);
	sender_disconnect(&snd);
	if (rf)
		fclose(rf);
	return status;
}

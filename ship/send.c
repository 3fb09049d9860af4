/*
 * send.c — the COPY sender (libpq): connection with retry and backoff, the
 * committed position of a source, and one transaction per batch:
 *
 *   BEGIN; COPY apicount.requests (...) FROM STDIN;
 *   SELECT apicount.ship_position(source, file, offset, lines, rejected, prev...);
 *   COMMIT;
 *
 * Any failure rolls the whole batch back; the caller then reconnects and
 * re-reads every source's position from apicount.sources, which is what the
 * server has: after a server crash that is the last flushed position, and
 * the lines after it are shipped again.  libpq's environment variables
 * apply (PGHOST, PGDATABASE, ...).
 */
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "send.h"

static void
sleep_ms(int ms)
{
	struct timespec ts = {ms / 1000, (long) (ms % 1000) * 1000000L};

	nanosleep(&ts, NULL);
}

/* a compact one-line message of the last error */
static const char *
one_line(const char *msg)
{
	static char b[512];
	size_t		i;

	snprintf(b, sizeof(b), "%s", msg ? msg : "");
	for (i = 0; b[i]; i++)
		if (b[i] == '\n')
			b[i] = ' ';
	while (i > 0 && b[i - 1] == ' ')
		b[--i] = '\0';
	return b;
}

void
sender_disconnect(Sender *s)
{
	if (s->conn)
		PQfinish(s->conn);
	s->conn = NULL;
}

/* settings that decide which rows apicount takes */
static bool
read_settings(Sender *s)
{
	PGresult   *r = PQexec(s->conn,
						   "SELECT extract(epoch FROM current_setting('apicount.retention')::interval)::bigint, "
						   "current_setting('apicount.normalize_paths')::bool");

	if (PQresultStatus(r) != PGRES_TUPLES_OK)
	{
		ship_log("cannot read apicount settings: %s", one_line(PQerrorMessage(s->conn)));
		PQclear(r);
		return false;
	}
	s->retention_s = atoll(PQgetvalue(r, 0, 0));
	s->normalize = PQgetvalue(r, 0, 1)[0] == 't';
	PQclear(r);
	return true;
}

bool
sender_connect(Sender *s)
{
	int			backoff = 100;
	int			attempts = 0;

	while (!*s->stop)
	{
		const char *keys[] = {"dbname", "fallback_application_name", NULL};
		const char *vals[] = {s->conninfo, "apicount-ship", NULL};

		sender_disconnect(s);
		s->conn = PQconnectdbParams(keys, vals, 1);
		s->in_copy = false;
		if (PQstatus(s->conn) == CONNECTION_OK && read_settings(s))
		{
			if (attempts > 0)
				ship_log("connected after %d attempt(s)", attempts + 1);
			return true;
		}
		if (PQstatus(s->conn) == CONNECTION_OK)
			return false;		/* connected, but no apicount there */
		attempts++;
		if (attempts == 1 || attempts % 10 == 0)
			ship_log("cannot connect (attempt %d, retrying every %d ms at most): %s",
					 attempts, 5000, one_line(PQerrorMessage(s->conn)));
		sleep_ms(backoff);
		backoff = backoff * 2 > 5000 ? 5000 : backoff * 2;
	}
	return false;
}

/* the result of an error: retry (connection, restart, lock) or give up */
static ShipResult
classify(Sender *s, PGresult *r)
{
	const char *state = r ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : NULL;

	if (PQstatus(s->conn) != CONNECTION_OK || state == NULL)
		return SHIP_RESYNC;
	if (strcmp(state, "53400") == 0)
		return SHIP_FATAL;		/* apicount.max_sources: only a restart frees slots */
	if (strncmp(state, "08", 2) == 0 || strncmp(state, "57", 2) == 0 ||
		strncmp(state, "53", 2) == 0 || strncmp(state, "40", 2) == 0 ||
		strcmp(state, "55P03") == 0)
		return SHIP_RESYNC;
	return SHIP_FATAL;
}

static ShipResult
fail(Sender *s, PGresult *r, const char *what)
{
	ShipResult res = classify(s, r);

	ship_log("%s failed: %s", what,
			 one_line(r && PQresultErrorMessage(r)[0] ? PQresultErrorMessage(r) :
					  PQerrorMessage(s->conn)));
	PQclear(r);
	if (PQstatus(s->conn) == CONNECTION_OK)
		PQclear(PQexec(s->conn, "ROLLBACK"));
	return res;
}

ShipResult
sender_position(Sender *s, const char *source, Position *pos)
{
	const char *params[1] = {source};
	PGresult   *r = PQexecParams(s->conn,
								 "SELECT file_id, file_offset, lines, rejected FROM apicount.sources WHERE name = $1",
								 1, NULL, params, NULL, NULL, 0);

	memset(pos, 0, sizeof(*pos));
	if (PQresultStatus(r) != PGRES_TUPLES_OK)
		return fail(s, r, "reading the position");
	if (PQntuples(r) == 1)
	{
		pos->valid = true;
		snprintf(pos->file_id, sizeof(pos->file_id), "%s", PQgetvalue(r, 0, 0));
		pos->offset = atoll(PQgetvalue(r, 0, 1));
		pos->lines = atoll(PQgetvalue(r, 0, 2));
		pos->rejected = atoll(PQgetvalue(r, 0, 3));
	}
	PQclear(r);
	return SHIP_OK;
}

static bool
is_data_error(PGresult *r)
{
	const char *state = PQresultErrorField(r, PG_DIAG_SQLSTATE);

	return state != NULL && (strncmp(state, "22", 2) == 0 || strncmp(state, "23", 2) == 0);
}

/* COPY rows [lo, hi) of the batch; NULL result on success */
static PGresult *
copy_rows(Sender *s, Batch *b, int lo, int hi)
{
	PGresult   *r = PQexec(s->conn, "COPY apicount.requests (" ROW_COLUMNS ") FROM STDIN");
	int64_t		from = b->row_start[lo];
	int64_t		to = hi < b->nrows ? b->row_start[hi] : (int64_t) b->rows.len;

	if (PQresultStatus(r) != PGRES_COPY_IN)
		return r;
	PQclear(r);
	if (PQputCopyData(s->conn, b->rows.data + from, (int) (to - from)) != 1 ||
		PQputCopyEnd(s->conn, NULL) != 1)
		return PQgetResult(s->conn);
	r = PQgetResult(s->conn);
	if (PQresultStatus(r) == PGRES_COMMAND_OK)
	{
		PQclear(r);
		while ((r = PQgetResult(s->conn)) != NULL)
			PQclear(r);
		return NULL;
	}
	{
		PGresult   *extra;

		while ((extra = PQgetResult(s->conn)) != NULL)
			PQclear(extra);
	}
	return r;
}

static bool
exec_ok(Sender *s, const char *sql, PGresult **err)
{
	PGresult   *r = PQexec(s->conn, sql);

	if (PQresultStatus(r) == PGRES_COMMAND_OK)
	{
		PQclear(r);
		return true;
	}
	*err = r;
	return false;
}

/*
 * Rows apicount refused although row.c let them through (a clock at the
 * edge of the retention, say): each row under its own savepoint.
 */
static ShipResult
copy_one_by_one(Sender *s, Batch *b, const char *file_name, int *refused)
{
	PGresult   *r = NULL;
	int			i;

	*refused = 0;
	for (i = 0; i < b->nrows; i++)
	{
		if (!exec_ok(s, "SAVEPOINT row", &r))
			return fail(s, r, "SAVEPOINT");
		r = copy_rows(s, b, i, i + 1);
		if (r == NULL)
		{
			if (!exec_ok(s, "RELEASE SAVEPOINT row", &r))
				return fail(s, r, "RELEASE SAVEPOINT");
			continue;
		}
		if (!is_data_error(r))
			return fail(s, r, "COPY");
		{
			const char *row = b->rows.data + b->row_start[i];
			const char *nl = strchr(row, '\n');

			batch_reject(b, file_name, b->row_line[i],
						 one_line(PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY)),
						 row, nl ? (size_t) (nl - row) : strlen(row));
			(*refused)++;
		}
		PQclear(r);
		/* ROLLBACK TO keeps the savepoint: release it, back to the top level */
		if (!exec_ok(s, "ROLLBACK TO SAVEPOINT row; RELEASE SAVEPOINT row", &r))
			return fail(s, r, "ROLLBACK TO SAVEPOINT");
	}
	return SHIP_OK;
}

ShipResult
sender_stream(Sender *s, Batch *b)
{
	if (b->nrows == 0 || b->sent == b->rows.len)
		return SHIP_OK;
	if (!s->in_copy)
	{
		/* one round trip: the transaction and its COPY */
		PGresult   *r = PQexec(s->conn, "BEGIN; COPY apicount.requests (" ROW_COLUMNS ") FROM STDIN");

		if (PQresultStatus(r) != PGRES_COPY_IN)
			return fail(s, r, "COPY");
		PQclear(r);
		s->in_copy = true;
	}
	if (PQputCopyData(s->conn, b->rows.data + b->sent, (int) (b->rows.len - b->sent)) != 1)
	{
		s->in_copy = false;
		return fail(s, NULL, "sending rows");
	}
	b->sent = b->rows.len;
	return SHIP_OK;
}

/* the end of the batch's COPY: NULL, or its error */
static PGresult *
end_copy(Sender *s)
{
	PGresult   *r;
	PGresult   *extra;

	s->in_copy = false;
	if (PQputCopyEnd(s->conn, NULL) != 1)
		return PQgetResult(s->conn);
	r = PQgetResult(s->conn);
	while ((extra = PQgetResult(s->conn)) != NULL)
		PQclear(extra);
	if (PQresultStatus(r) == PGRES_COMMAND_OK)
	{
		PQclear(r);
		return NULL;
	}
	return r;
}

/* an SQL literal of a C string (NULL: NULL) */
static char *
literal(Sender *s, const char *v)
{
	return v ? PQescapeLiteral(s->conn, v, strlen(v)) : NULL;
}

ShipResult
sender_ship(Sender *s, const char *source, Batch *b, const Position *prev,
			Position *next, const char *file_name)
{
	PGresult   *r = NULL;
	int			refused = 0;
	ShipResult	res;
	char	   *l_source, *l_file, *l_prev;
	char	   *sql;
	size_t		sqllen;
	char		prev_offset[32];

	if ((res = sender_stream(s, b)) != SHIP_OK)
		return res;
	if (s->in_copy && (r = end_copy(s)) != NULL)
	{
		if (!is_data_error(r))
			return fail(s, r, "COPY");
		ship_log("%s: apicount refused a row of this batch (%s): shipping it row by row",
				 source, one_line(PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY)));
		PQclear(r);
		PQclear(PQexec(s->conn, "ROLLBACK"));
		if (!exec_ok(s, "BEGIN", &r))
			return fail(s, r, "BEGIN");
		if ((res = copy_one_by_one(s, b, file_name, &refused)) != SHIP_OK)
			return res;
	}
	else if (b->nrows == 0 && !exec_ok(s, "BEGIN", &r))
		return fail(s, r, "BEGIN");

	*next = *prev;
	next->valid = true;
	snprintf(next->file_id, sizeof(next->file_id), "%s", b->file_id);
	next->offset = b->end_offset;
	next->lines = prev->lines + b->nrows - refused;
	next->rejected = prev->rejected + b->nrejected;

	/* the position, and the commit: one round trip */
	l_source = literal(s, source);
	l_file = literal(s, next->file_id);
	l_prev = literal(s, prev->valid ? prev->file_id : NULL);
	sqllen = strlen(l_source) + strlen(l_file) + (l_prev ? strlen(l_prev) : 4) + 256;
	sql = malloc(sqllen);
	if (sql == NULL)
	{
		fprintf(stderr, "apicount-ship: out of memory\n");
		exit(2);
	}
	if (prev->valid)
		snprintf(prev_offset, sizeof(prev_offset), "%lld", (long long) prev->offset);
	else
		strcpy(prev_offset, "NULL");
	snprintf(sql, sqllen,
			 "SELECT apicount.ship_position(%s, %s, %lld, %lld, %lld, %s, %s); COMMIT",
			 l_source, l_file, (long long) next->offset, (long long) next->lines,
			 (long long) next->rejected, l_prev ? l_prev : "NULL", prev_offset);
	PQfreemem(l_source);
	PQfreemem(l_file);
	if (l_prev)
		PQfreemem(l_prev);
	r = PQexec(s->conn, sql);
	free(sql);
	/* PQexec gives the last result: COMMIT's, or the error that stopped the string */
	if (PQresultStatus(r) != PGRES_COMMAND_OK ||
		strcmp(PQcmdStatus(r), "COMMIT") != 0)
		return fail(s, r, "apicount.ship_position or COMMIT");
	PQclear(r);
	return SHIP_OK;
}

void
rules_now(const Sender *s, RowRules *rules)
{
	struct timespec ts;
	int64_t		now;

	clock_gettime(CLOCK_REALTIME, &ts);
	now = (int64_t) ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
	/* a margin on each side: the server checks against its statement time */
	rules->oldest_us = now - (s->retention_s - 60) * 1000000;
	rules->newest_us = now + (5 * 60 - 10) * (int64_t) 1000000;
	rules->normalize = s->normalize;
}

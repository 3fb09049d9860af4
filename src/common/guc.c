/*-------------------------------------------------------------------------
 * guc.c
 *		apicount's settings (apicount.*) and their checks.
 *
 * Postmaster settings size shared memory and pick the worker's database;
 * sighup settings drive the worker; user settings shape ingest.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "datatype/timestamp.h"
#include "utils/datetime.h"
#include "utils/guc.h"

#include "guc.h"

char	   *apicount_database = NULL;
int			apicount_max_entries = 100000;
int			apicount_max_apis = 10000;
int			apicount_heavy_counters = 2048;
int			apicount_max_audited_entries = 50000;
int			apicount_net_prefix_v4 = 24;
int			apicount_net_prefix_v6 = 64;
int			apicount_slot_seconds = 5;
int			apicount_flush_interval_ms = 5000;
char	   *apicount_retention_text = NULL;
bool		apicount_normalize_paths = true;
bool		apicount_track_callers = true;
int64		apicount_retention_secs = 30 * 86400;

/* the longest retention accepted: 1,000 years, far from int64 microseconds' limit */
#define RETENTION_MAX_SECS	(INT64CONST(1000) * 31557600)

/*
 * apicount_parse_duration: a PostgreSQL interval literal, in any of the forms
 * and units interval_in accepts ('13 months', '2 years', '1 day 12:00',
 * 'P1Y2M', '1 decade', ...), to seconds the way extract(epoch from interval)
 * counts them: a month is 30 days, a year 365.25 days.  Uses interval_in's
 * own parser, which reports errors as codes rather than by ereport (so a
 * GUC check hook may call it, in the postmaster too).  False for text that
 * is not an interval, or one that is negative or longer than 1,000 years.
 */
bool
apicount_parse_duration(const char *s, int64 *secs)
{
	char		workbuf[256];
	char		isobuf[256];
	char	   *field[MAXDATEFIELDS];
	int			ftype[MAXDATEFIELDS];
	int			nf;
	int			dtype;
	int			dterr;
	struct pg_itm_in itm;
	double		total;

	if (strlen(s) >= sizeof(isobuf))
		return false;
	dterr = ParseDateTime(s, workbuf, sizeof(workbuf), field, ftype,
						  MAXDATEFIELDS, &nf);
	if (dterr == 0)
		dterr = DecodeInterval(field, ftype, nf, INTERVAL_FULL_RANGE,
							   &dtype, &itm);
	if (dterr == DTERR_BAD_FORMAT)
	{
		strlcpy(isobuf, s, sizeof(isobuf));
		dterr = DecodeISO8601Interval(isobuf, &dtype, &itm);
	}
	if (dterr != 0 || dtype != DTK_DELTA)
		return false;
	total = (double) itm.tm_year * DAYS_PER_YEAR * SECS_PER_DAY +
		(double) itm.tm_mon * DAYS_PER_MONTH * SECS_PER_DAY +
		(double) itm.tm_mday * SECS_PER_DAY +
		(double) itm.tm_usec / USECS_PER_SEC;
	if (!(total >= 0 && total <= (double) RETENTION_MAX_SECS))
		return false;
	*secs = (int64) total;
	return true;
}

static bool
check_retention(char **newval, void **extra, GucSource source)
{
	int64		secs;

	if (*newval == NULL || !apicount_parse_duration(*newval, &secs))
	{
		GUC_check_errdetail("apicount.retention must be an interval of 1 hour to 1000 years, such as '30 days', '13 months' or '2 years'.");
		return false;
	}
	if (secs < 3600)
	{
		GUC_check_errdetail("apicount.retention must be at least 1 hour.");
		return false;
	}
	return true;
}

/* the check hook accepted newval, so parsing it again cannot fail */
static void
assign_retention(const char *newval, void *extra)
{
	int64		secs;

	if (newval != NULL && apicount_parse_duration(newval, &secs))
		apicount_retention_secs = secs;
}

static bool
check_slot_seconds(int *newval, void **extra, GucSource source)
{
	if (60 % *newval != 0)
	{
		GUC_check_errdetail("apicount.slot_seconds must divide 60 (1, 2, 3, 4, 5, 6, 10, 12, 15, 20, 30 or 60).");
		return false;
	}
	return true;
}

void
apicount_define_gucs(void)
{
	DefineCustomStringVariable("apicount.database",
							   "Database the apicount background worker connects to.",
							   "CREATE EXTENSION apicount is only allowed in this database.",
							   &apicount_database,
							   "postgres",
							   PGC_POSTMASTER,
							   0,
							   NULL, NULL, NULL);

	DefineCustomIntVariable("apicount.max_entries",
							"Maximum number of live caller entries (minute, API, client IP, user id) in shared memory.",
							"Hits of callers that find no room are counted under their API's \"(other callers)\".",
							&apicount_max_entries,
							100000, 1000, 50000000,
							PGC_POSTMASTER,
							0,
							NULL, NULL, NULL);

	DefineCustomIntVariable("apicount.max_apis",
							"Maximum number of live API entries (minute, method, path) in shared memory.",
							"Hits of APIs that find no room are counted under their method's path \"(other)\".",
							&apicount_max_apis,
							10000, 100, 10000000,
							PGC_POSTMASTER,
							0,
							NULL, NULL, NULL);

	DefineCustomIntVariable("apicount.max_audited_entries",
							"Entries kept for the callers of audited APIs (apicount.audited_apis) when the caller tier is full.",
							"When these run out too, the worker fires an alert of rule 'audited_apis_full'.",
							&apicount_max_audited_entries,
							50000, 100, 10000000,
							PGC_POSTMASTER,
							0,
							NULL, NULL, NULL);

	DefineCustomIntVariable("apicount.heavy_counters",
							"Counters of each summary of heavy callers among the folded ones.",
							"A caller with more than folded calls / heavy_counters calls of one API in a minute is always reported.",
							&apicount_heavy_counters,
							2048, 64, 1000000,
							PGC_POSTMASTER,
							0,
							NULL, NULL, NULL);

	DefineCustomIntVariable("apicount.net_prefix_v4",
							"Prefix length of the IPv4 networks that by => 'net' groups callers by.",
							NULL,
							&apicount_net_prefix_v4,
							24, 8, 32,
							PGC_POSTMASTER,
							0,
							NULL, NULL, NULL);

	DefineCustomIntVariable("apicount.net_prefix_v6",
							"Prefix length of the IPv6 networks that by => 'net' groups callers by.",
							NULL,
							&apicount_net_prefix_v6,
							64, 16, 128,
							PGC_POSTMASTER,
							0,
							NULL, NULL, NULL);

	DefineCustomIntVariable("apicount.slot_seconds",
							"Resolution of the exact sliding windows, in seconds.",
							NULL,
							&apicount_slot_seconds,
							5, 1, 60,
							PGC_POSTMASTER,
							GUC_UNIT_S,
							check_slot_seconds, NULL, NULL);

	DefineCustomIntVariable("apicount.flush_interval",
							"How often the worker writes counters to the rollup tables.",
							NULL,
							&apicount_flush_interval_ms,
							5000, 100, 3600 * 1000,
							PGC_SIGHUP,
							GUC_UNIT_MS,
							NULL, NULL, NULL);

	DefineCustomStringVariable("apicount.retention",
							   "How long rollup rows are kept; older hits are rejected.",
							   "A duration such as '30 days' or '12 hours'.",
							   &apicount_retention_text,
							   "30 days",
							   PGC_SIGHUP,
							   0,
							   check_retention, assign_retention, NULL);

	DefineCustomBoolVariable("apicount.normalize_paths",
							 "Strip query strings and replace id segments of paths with :id.",
							 NULL,
							 &apicount_normalize_paths,
							 true,
							 PGC_USERSET,
							 0,
							 NULL, NULL, NULL);

	DefineCustomBoolVariable("apicount.track_callers",
							 "Count hits per client IP and user id (caller_minute).",
							 NULL,
							 &apicount_track_callers,
							 true,
							 PGC_USERSET,
							 0,
							 NULL, NULL, NULL);

#if PG_VERSION_NUM >= 150000
	MarkGUCPrefixReserved("apicount");
#else
	EmitWarningsOnPlaceholders("apicount");
#endif
}

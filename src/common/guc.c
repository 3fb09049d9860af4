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
char	   *apicount_retention_minute_text = NULL;
char	   *apicount_retention_hour_text = NULL;
char	   *apicount_retention_day_text = NULL;

/* the settings as parsed; the minute tier's is -1 while it is empty */
static int64 retention_base_secs = 30 * 86400;
static int64 retention_minute_secs = -1;
static int64 retention_hour_secs = 400 * 86400;
static int64 retention_day_secs = INT64CONST(5) * 31557600;

/* the longest retention accepted: 1,000 years, far from int64 microseconds' limit */
#define RETENTION_MAX_SECS	(INT64CONST(1000) * 31557600)

/*
 * apicount_parse_duration: a PostgreSQL interval literal, in any of the forms
 * and units interval_in accepts ('13 months', '2 years', '1 day 12:00',
 * 'P1Y2M', '1 decade', ...), to seconds: a month as 30 days, a year as
 * 365.25 days, as written ('13 months' is 390 days, where extract(epoch from
 * interval) counts 12 of the months as a year: 395.25).  Uses interval_in's
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

static void update_minute_retention(void);

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
		retention_base_secs = secs;
	update_minute_retention();
}

/* apicount.retention_minute, or apicount.retention (its alias) when empty */
static void
update_minute_retention(void)
{
	apicount_retention_secs = retention_minute_secs >= 0 ?
		retention_minute_secs : retention_base_secs;
}

/*
 * The retention of a tier (0 minute, 1 hour, 2 day) in seconds: a coarser
 * tier keeps its rows at least as long as a finer one, so that a range the
 * finer tier no longer holds is always answered by the coarser one.
 */
int64
apicount_retention_tier_secs(int tier)
{
	int64		m = apicount_retention_secs;
	int64		h = Max(m, retention_hour_secs);

	return tier == 0 ? m : tier == 1 ? h : Max(h, retention_day_secs);
}

static bool
check_tier_retention(char **newval, void **extra, GucSource source)
{
	if (*newval != NULL && (*newval)[0] == '\0')
		return true;			/* empty: retention_minute follows apicount.retention */
	return check_retention(newval, extra, source);
}

static void
assign_retention_minute(const char *newval, void *extra)
{
	int64		secs;

	if (newval == NULL || newval[0] == '\0')
		retention_minute_secs = -1;
	else if (apicount_parse_duration(newval, &secs))
		retention_minute_secs = secs;
	update_minute_retention();
}

static void
assign_retention_hour(const char *newval, void *extra)
{
	int64		secs;

	if (newval != NULL && apicount_parse_duration(newval, &secs))
		retention_hour_secs = secs;
}

static void
assign_retention_day(const char *newval, void *extra)
{
	int64		secs;

	if (newval != NULL && apicount_parse_duration(newval, &secs))
		retention_day_secs = secs;
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
							   "How long minute rollup rows are kept; older hits are rejected.",
							   "A duration such as '30 days' or '12 hours'; the minute tier's retention unless apicount.retention_minute is set.",
							   &apicount_retention_text,
							   "30 days",
							   PGC_SIGHUP,
							   0,
							   check_retention, assign_retention, NULL);

	DefineCustomStringVariable("apicount.retention_minute",
							   "How long api_minute and caller rows are kept; empty: apicount.retention.",
							   NULL,
							   &apicount_retention_minute_text,
							   "",
							   PGC_SIGHUP,
							   0,
							   check_tier_retention, assign_retention_minute, NULL);

	DefineCustomStringVariable("apicount.retention_hour",
							   "How long api_hour rows are kept (at least as long as minutes).",
							   NULL,
							   &apicount_retention_hour_text,
							   "400 days",
							   PGC_SIGHUP,
							   0,
							   check_retention, assign_retention_hour, NULL);

	DefineCustomStringVariable("apicount.retention_day",
							   "How long api_day rows are kept (at least as long as hours).",
							   NULL,
							   &apicount_retention_day_text,
							   "5 years",
							   PGC_SIGHUP,
							   0,
							   check_retention, assign_retention_day, NULL);

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

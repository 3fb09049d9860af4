/*-------------------------------------------------------------------------
 * guc.c
 *		apicount's settings (apicount.*) and their checks.
 *
 * Postmaster settings size shared memory and pick the worker's database;
 * sighup settings drive the worker; user settings shape ingest.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <ctype.h>

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

static const struct
{
	const char *name;
	int64		secs;
}			duration_units[] =
{
	{"s", 1}, {"sec", 1}, {"secs", 1}, {"second", 1}, {"seconds", 1},
	{"min", 60}, {"mins", 60}, {"minute", 60}, {"minutes", 60},
	{"h", 3600}, {"hour", 3600}, {"hours", 3600},
	{"d", 86400}, {"day", 86400}, {"days", 86400},
	{"w", 604800}, {"week", 604800}, {"weeks", 604800},
};

bool
apicount_parse_duration(const char *s, int64 *secs)
{
	int64		total = 0;
	bool		any = false;

	while (*s)
	{
		int64		n = 0;
		char		unit[16];
		int			ulen = 0;
		bool		found = false;
		int			i;

		while (isspace((unsigned char) *s))
			s++;
		if (*s == '\0')
			break;
		if (!isdigit((unsigned char) *s))
			return false;
		while (isdigit((unsigned char) *s))
		{
			n = n * 10 + (*s - '0');
			if (n > INT64CONST(100000000))
				return false;
			s++;
		}
		while (isspace((unsigned char) *s))
			s++;
		while (isalpha((unsigned char) *s))
		{
			if (ulen >= (int) sizeof(unit) - 1)
				return false;
			unit[ulen++] = tolower((unsigned char) *s);
			s++;
		}
		unit[ulen] = '\0';
		if (ulen == 0)
			return false;
		for (i = 0; i < lengthof(duration_units); i++)
		{
			if (strcmp(unit, duration_units[i].name) == 0)
			{
				total += n * duration_units[i].secs;
				found = true;
				break;
			}
		}
		if (!found)
			return false;
		any = true;
	}
	if (!any)
		return false;
	*secs = total;
	return true;
}

static bool
check_retention(char **newval, void **extra, GucSource source)
{
	int64		secs;

	if (*newval == NULL || !apicount_parse_duration(*newval, &secs))
	{
		GUC_check_errdetail("apicount.retention must be a duration such as '30 days', '12 hours' or '2 weeks'.");
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

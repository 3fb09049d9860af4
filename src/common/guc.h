/*-------------------------------------------------------------------------
 * guc.h
 *		apicount's configuration settings.
 *-------------------------------------------------------------------------
 */
#ifndef APICOUNT_GUC_H
#define APICOUNT_GUC_H

extern char *apicount_database;
extern int	apicount_max_entries;
extern int	apicount_max_apis;
extern int	apicount_heavy_counters;
extern int	apicount_max_audited_entries;
extern int	apicount_net_prefix_v4;
extern int	apicount_net_prefix_v6;
extern int	apicount_slot_seconds;
extern int	apicount_flush_interval_ms;
extern char *apicount_retention_text;
extern char *apicount_retention_minute_text;
extern char *apicount_retention_hour_text;
extern char *apicount_retention_day_text;
extern bool apicount_normalize_paths;
extern bool apicount_track_callers;

/* the minute tier's retention in seconds (apicount.retention_minute, else
 * apicount.retention) */
extern int64 apicount_retention_secs;

/* a tier's retention in seconds: 0 minute, 1 hour, 2 day */
extern int64 apicount_retention_tier_secs(int tier);

extern void apicount_define_gucs(void);

/* parse "30 days", "12h", "1 week 2 days"... into seconds; false if invalid */
extern bool apicount_parse_duration(const char *s, int64 *secs);

#endif

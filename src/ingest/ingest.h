/*-------------------------------------------------------------------------
 * ingest.h
 *		Turning one request (SQL values) into a pending hit.
 *-------------------------------------------------------------------------
 */
#ifndef APICOUNT_INGEST_H
#define APICOUNT_INGEST_H

#include "fmgr.h"
#include "executor/tuptable.h"
#include "utils/timestamp.h"

/* one request as the SQL surface gives it; NULL pointers are SQL NULLs */
typedef struct RequestValues
{
	text	   *path;
	text	   *method;
	Datum		client_ip;		/* inet, valid when has_ip */
	bool		has_ip;
	text	   *user_id;
	bool		has_status;
	int32		status;
	bool		has_latency;
	float8		latency_ms;
	bool		has_ts;
	TimestampTz ts;
} RequestValues;

/* validate, normalize and record one hit; throws on bad input */
extern void ingest_request(const RequestValues *req);

/* validate and record one row of apicount.requests (a slot of its table) */
extern void ingest_slot(TupleTableSlot *slot);

/* the same for a batch of rows; *row is the row being handled (1-based) */
extern void ingest_slots(TupleTableSlot **slots, int nslots, int *row);

#endif

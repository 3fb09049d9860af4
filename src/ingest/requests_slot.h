/*-------------------------------------------------------------------------
 * requests_slot.h
 *		The tuple slot type of apicount.requests (see requests_slot.c).
 *-------------------------------------------------------------------------
 */
#ifndef APICOUNT_REQUESTS_SLOT_H
#define APICOUNT_REQUESTS_SLOT_H

#include "executor/tuptable.h"

extern const TupleTableSlotOps apicount_requests_slot_ops;

/* start loading what reading the slot's values will touch */
extern void requests_slot_prefetch(TupleTableSlot *slot);

#endif

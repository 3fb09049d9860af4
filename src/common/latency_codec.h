/*-------------------------------------------------------------------------
 * latency_codec.h
 *		Log-scaled latency buckets and the sparse histogram format.
 *
 * Bucket i >= 1 holds latencies in (G^(i-1), G^i] microseconds with
 * G = LAT_GAMMA; bucket 0 holds everything up to 1 microsecond and is
 * reported as 0 (logs in whole milliseconds have many zeros).  A bucket
 * i >= 1 is reported as 2 G^i / (G + 1) us, within (G - 1) / (G + 1) = 1.48 % of
 * every latency it holds (the DDSketch construction).  Histograms are
 * mergeable by adding bucket counts.
 *
 * The stored format (a bytea in api_minute.latency_hist): one version byte,
 * then, for each non-empty bucket in ascending order, varint(gap) and
 * varint(count), where gap is the number of buckets skipped since the
 * previous non-empty one (unsigned LEB128 varints).
 *
 * Pure C: no server headers, no allocation, no errors thrown; unit tests
 * build this module alone.
 *-------------------------------------------------------------------------
 */
#ifndef APICOUNT_LATENCY_CODEC_H
#define APICOUNT_LATENCY_CODEC_H

#include <stddef.h>
#include <stdint.h>

#define LAT_GAMMA			1.03
#define LAT_NBUCKETS		864 /* up to G^863 us (> 1 day, the latency cap) */
#define LAT_PAGE_BUCKETS	16	/* buckets per shared-memory page */
#define LAT_NPAGES			(LAT_NBUCKETS / LAT_PAGE_BUCKETS)
#define LAT_FORMAT_VERSION	1
/* worst case: version byte + every bucket with a 1-byte gap, 10-byte count */
#define LAT_MAX_ENCODED		(1 + LAT_NBUCKETS * 11)

/* bucket of a latency in nanoseconds */
extern int	lat_bucket_of(uint64_t ns);

/* the value a bucket stands for, in milliseconds */
extern double lat_bucket_value_ms(int idx);

/* bounds of a bucket, in milliseconds: (lower, upper] */
extern void lat_bucket_bounds_ms(int idx, double *lower, double *upper);

/* encode a dense histogram; returns the bytes written (out >= LAT_MAX_ENCODED) */
extern size_t lat_encode(const uint64_t *dense, uint8_t *out);

/*
 * Add an encoded histogram into a dense one.  Returns 0, or -1 if the
 * input is malformed (then dense may hold part of it).
 */
extern int	lat_decode_add(const uint8_t *in, size_t len, uint64_t *dense);

/* total count of a dense histogram */
extern uint64_t lat_total(const uint64_t *dense);

/*
 * The percentile p (0..1) of a dense histogram, in milliseconds, with the
 * rank rule of percentile_disc: the value at 1-based rank ceil(p * N), the
 * smallest for p = 0.  Returns a negative number for an empty histogram.
 */
extern double lat_percentile_ms(const uint64_t *dense, double p);

/*
 * The same percentile read straight from an encoded histogram (two passes
 * over its pairs, no dense copy): sets *ms as lat_percentile_ms would for
 * its decoding.  Returns 0, or -1 if the input is malformed or its total
 * count does not fit in 64 bits (which lat_decode_add accepts when no
 * single bucket overflows).
 */
extern int	lat_encoded_percentile_ms(const uint8_t *in, size_t len, double p,
									  double *ms);

#endif

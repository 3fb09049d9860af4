/*-------------------------------------------------------------------------
 * latency_codec.c
 *		Log-scaled latency buckets, the sparse histogram encoding, and
 *		percentiles of a merged histogram.  See latency_codec.h.
 *-------------------------------------------------------------------------
 */
#include "latency_codec.h"

#include <math.h>

/*
 * lat_bucket_of looks buckets up in two tables, filled on first use:
 * bucket_upper_ns[i] is the largest latency (ns) of bucket i, and
 * bucket_guess[] gives, for the leading bit and the 6 bits after it, the
 * bucket of the smallest latency with those bits.  All latencies sharing
 * those bits lie within a factor 65/64 < G of each other, so they span at
 * most two buckets: the guess or the one after it.
 */
#define GUESS_BITS		6
static uint64_t bucket_upper_ns[LAT_NBUCKETS];
static uint16_t bucket_guess[64 << GUESS_BITS];
static int	bucket_tables_ready = 0;

static int
leading_bit(uint64_t v)			/* v > 0 */
{
#if defined(__GNUC__) || defined(__clang__)
	return 63 - __builtin_clzll(v);
#else
	int			n = 0;

	while (v >>= 1)
		n++;
	return n;
#endif
}

static int
bucket_by_search(uint64_t ns)
{
	int			lo = 0;
	int			hi = LAT_NBUCKETS - 1;

	/* the first bucket whose upper bound is >= ns */
	while (lo < hi)
	{
		int			mid = (lo + hi) / 2;

		if (bucket_upper_ns[mid] >= ns)
			hi = mid;
		else
			lo = mid + 1;
	}
	return lo;
}

static void
init_bucket_tables(void)
{
	int			i;
	int			bit;

	/* bucket i >= 1: (G^(i-1), G^i] us; bucket 0: up to 1 us */
	for (i = 0; i < LAT_NBUCKETS - 1; i++)
		bucket_upper_ns[i] = (uint64_t) floor(1000.0 * pow(LAT_GAMMA, i));
	bucket_upper_ns[LAT_NBUCKETS - 1] = UINT64_MAX;
	for (bit = GUESS_BITS; bit < 64; bit++)
		for (i = 0; i < (1 << GUESS_BITS); i++)
			bucket_guess[(bit << GUESS_BITS) | i] = (uint16_t)
				bucket_by_search(((uint64_t) 1 << bit) |
								 ((uint64_t) i << (bit - GUESS_BITS)));
	bucket_tables_ready = 1;
}

int
lat_bucket_of(uint64_t ns)
{
	int			bit;
	int			i;

	if (ns <= 1000)
		return 0;
	if (!bucket_tables_ready)
		init_bucket_tables();
	bit = leading_bit(ns);		/* >= 9, since ns > 1000 */
	i = bucket_guess[(bit << GUESS_BITS) |
					 ((ns >> (bit - GUESS_BITS)) & ((1 << GUESS_BITS) - 1))];
	if (ns > bucket_upper_ns[i])
		i++;
	return i;
}

double
lat_bucket_value_ms(int idx)
{
	if (idx <= 0)
		return 0.0;
	return 2.0 * pow(LAT_GAMMA, idx) / (LAT_GAMMA + 1.0) / 1000.0;
}

void
lat_bucket_bounds_ms(int idx, double *lower, double *upper)
{
	if (idx <= 0)
	{
		*lower = 0.0;
		*upper = 0.001;
		return;
	}
	*lower = pow(LAT_GAMMA, idx - 1) / 1000.0;
	*upper = pow(LAT_GAMMA, idx) / 1000.0;
}

static uint8_t *
put_varint(uint8_t *p, uint64_t v)
{
	while (v >= 0x80)
	{
		*p++ = (uint8_t) (v | 0x80);
		v >>= 7;
	}
	*p++ = (uint8_t) v;
	return p;
}

/* returns the next position, or NULL if the varint is truncated or too long */
static const uint8_t *
get_varint_slow(const uint8_t *p, const uint8_t *end, uint64_t *v)
{
	uint64_t	r = 0;
	int			shift = 0;

	while (p < end)
	{
		uint8_t		b = *p++;

		if (shift == 63 && (b & 0x7e) != 0)
			return NULL;		/* does not fit in 64 bits */
		r |= (uint64_t) (b & 0x7f) << shift;
		if ((b & 0x80) == 0)
		{
			*v = r;
			return p;
		}
		shift += 7;
		if (shift > 63)
			return NULL;
	}
	return NULL;
}

/*
 * Most varints of a histogram are one byte (the gaps, small counts) or two
 * (counts up to 16,383): decode those inline, the rest in the loop above.
 */
static inline const uint8_t *
get_varint(const uint8_t *p, const uint8_t *end, uint64_t *v)
{
	if (p < end && p[0] < 0x80)
	{
		*v = p[0];
		return p + 1;
	}
	if (end - p >= 2 && p[1] < 0x80)
	{
		*v = (uint64_t) (p[0] & 0x7f) | ((uint64_t) p[1] << 7);
		return p + 2;
	}
	return get_varint_slow(p, end, v);
}

/*
 * The next (bucket, count) pair of an encoding, from *p: 1 and the pair, 0
 * at the end, -1 if malformed (a varint cut short, a zero count, a bucket
 * past the last).  *idx is the previous pair's bucket (-1 before the first).
 */
static inline int
next_pair(const uint8_t **p, const uint8_t *end, int64_t *idx, uint64_t *count)
{
	uint64_t	gap;
	const uint8_t *q = *p;

	if (q >= end)
		return 0;
	q = get_varint(q, end, &gap);
	if (q == NULL || gap >= LAT_NBUCKETS)
		return -1;
	q = get_varint(q, end, count);
	if (q == NULL || *count == 0)
		return -1;
	*idx += (int64_t) gap + 1;
	if (*idx >= LAT_NBUCKETS)
		return -1;
	*p = q;
	return 1;
}

size_t
lat_encode(const uint64_t *dense, uint8_t *out)
{
	uint8_t    *p = out;
	int			prev = -1;
	int			i;

	*p++ = LAT_FORMAT_VERSION;
	for (i = 0; i < LAT_NBUCKETS; i++)
	{
		if (dense[i] == 0)
			continue;
		p = put_varint(p, (uint64_t) (i - prev - 1));
		p = put_varint(p, dense[i]);
		prev = i;
	}
	return (size_t) (p - out);
}

int
lat_decode_add(const uint8_t *in, size_t len, uint64_t *dense)
{
	const uint8_t *p = in + 1;
	const uint8_t *end = in + len;
	int64_t		idx = -1;
	uint64_t	count;
	int			r;

	if (len < 1 || in[0] != LAT_FORMAT_VERSION)
		return -1;
	while ((r = next_pair(&p, end, &idx, &count)) > 0)
	{
		if (dense[idx] > UINT64_MAX - count)
			return -1;
		dense[idx] += count;
	}
	return r;
}

uint64_t
lat_total(const uint64_t *dense)
{
	uint64_t	n = 0;
	int			i;

	for (i = 0; i < LAT_NBUCKETS; i++)
		n += dense[i];
	return n;
}

/*
 * The 1-based rank of percentile p among n values (percentile_disc), within
 * [1, n].  Past 2^53 values (double) n may round up, so the comparison with
 * n is made on the double before converting.
 */
static uint64_t
rank_of(double p, uint64_t n)
{
	double		r = ceil(p * (double) n);
	uint64_t	k;

	if (r >= (double) n)
		return n;
	k = r < 1.0 ? 1 : (uint64_t) r;
	return k > n ? n : k;
}

double
lat_percentile_ms(const uint64_t *dense, double p)
{
	uint64_t	n = lat_total(dense);
	uint64_t	rank;
	uint64_t	seen = 0;
	int			i;

	if (n == 0)
		return -1.0;
	rank = rank_of(p, n);
	for (i = 0; i < LAT_NBUCKETS; i++)
	{
		seen += dense[i];
		if (seen >= rank)
			return lat_bucket_value_ms(i);
	}
	return lat_bucket_value_ms(LAT_NBUCKETS - 1);
}

int
lat_encoded_percentile_ms(const uint8_t *in, size_t len, double p, double *ms)
{
	const uint8_t *end = in + len;
	const uint8_t *q;
	uint64_t	n = 0;
	uint64_t	count;
	uint64_t	rank;
	uint64_t	seen = 0;
	int64_t		idx = -1;
	int			r;

	if (len < 1 || in[0] != LAT_FORMAT_VERSION)
		return -1;
	/* pass 1: validate, as lat_decode_add does, and count */
	q = in + 1;
	while ((r = next_pair(&q, end, &idx, &count)) > 0)
	{
		if (n > UINT64_MAX - count)
			return -1;
		n += count;
	}
	if (r < 0)
		return -1;
	if (n == 0)
	{
		*ms = -1.0;
		return 0;
	}
	/* pass 2: the bucket that holds the rank */
	rank = rank_of(p, n);
	q = in + 1;
	idx = -1;
	while (next_pair(&q, end, &idx, &count) > 0)
	{
		seen += count;
		if (seen >= rank)
			break;
	}
	*ms = lat_bucket_value_ms((int) idx);
	return 0;
}

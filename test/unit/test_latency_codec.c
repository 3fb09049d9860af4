/*
 * test_latency_codec.c
 *		Unit tests for src/common/latency_codec.c, built without the server.
 *
 * Expected values are computed here independently: exact percentiles by
 * sorting the generated latencies (percentile_disc's rank rule, ceil(p*N)),
 * bucket membership from the definition (G^(i-1), G^i] microseconds, and
 * hand-written byte strings for the encoding.  Prints TAP.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "latency_codec.h"
#include "unit_tap.h"

static uint64_t rng_state = 88172645463325252ULL;

static uint64_t
xorshift(void)
{
	rng_state ^= rng_state << 13;
	rng_state ^= rng_state >> 7;
	rng_state ^= rng_state << 17;
	return rng_state;
}

static double
uniform01(void)
{
	return (double) (xorshift() >> 11) / 9007199254740992.0;
}

static int
cmp_u64(const void *a, const void *b)
{
	uint64_t	x = *(const uint64_t *) a;
	uint64_t	y = *(const uint64_t *) b;

	return x < y ? -1 : x > y;
}

int
main(void)
{
	static uint64_t dense[LAT_NBUCKETS];
	static uint64_t dense2[LAT_NBUCKETS];
	static uint8_t buf[LAT_MAX_ENCODED];
	char		detail[256];
	int			i;

	/* bucket membership, from the definition */
	{
		int			bad = 0;

		for (i = 0; i < 200000; i++)
		{
			/* log-uniform from 2 us to 1 day */
			double		us = exp(log(2.0) + uniform01() * (log(86400e6) - log(2.0)));
			uint64_t	ns = (uint64_t) (us * 1000.0);
			int			b = lat_bucket_of(ns);
			double		v = (double) ns / 1000.0;

			if (b < 1 || b >= LAT_NBUCKETS ||
				!(v > pow(LAT_GAMMA, b - 1) * (1 - 1e-12) &&
				  v <= pow(LAT_GAMMA, b) * (1 + 1e-12)))
			{
				if (bad++ == 0)
					snprintf(detail, sizeof(detail), "ns=%llu bucket=%d",
							 (unsigned long long) ns, b);
			}
		}
		check(bad == 0, "every latency falls in (G^(i-1), G^i] us of its bucket",
			  bad ? detail : NULL);
	}
	/* both sides of every bucket edge, G^i us, computed here with pow() */
	{
		int			bad = 0;

		for (i = 1; i < LAT_NBUCKETS - 1; i++)
		{
			uint64_t	edge = (uint64_t) floor(1000.0 * pow(LAT_GAMMA, i));

			if (lat_bucket_of(edge) != i || lat_bucket_of(edge + 1) != i + 1)
			{
				if (bad++ == 0)
					snprintf(detail, sizeof(detail), "edge of bucket %d (%llu ns): %d, %d",
							 i, (unsigned long long) edge, lat_bucket_of(edge),
							 lat_bucket_of(edge + 1));
			}
		}
		check(bad == 0, "the last ns of each bucket is in it, the next ns in the next bucket",
			  bad ? detail : NULL);
	}
	check(lat_bucket_of(0) == 0 && lat_bucket_of(1000) == 0 &&
		  lat_bucket_of(1001) == 1, "1 us and below is bucket 0", NULL);
	check(lat_bucket_of(UINT64_MAX) == LAT_NBUCKETS - 1,
		  "huge latencies clamp to the last bucket", NULL);
	check(lat_bucket_of(86400ULL * 1000000000ULL) < LAT_NBUCKETS - 1,
		  "1 day (the ingest cap) is below the last bucket", NULL);

	/* representative value within (G-1)/(G+1) of both bucket bounds */
	{
		double		bound = (LAT_GAMMA - 1) / (LAT_GAMMA + 1);
		int			bad = 0;

		for (i = 1; i < LAT_NBUCKETS; i++)
		{
			double		lo = pow(LAT_GAMMA, i - 1) / 1000.0;
			double		hi = pow(LAT_GAMMA, i) / 1000.0;
			double		v = lat_bucket_value_ms(i);

			if (fabs(v - lo) / lo > bound * (1 + 1e-9) ||
				fabs(v - hi) / hi > bound * (1 + 1e-9))
				bad++;
		}
		check(bad == 0, "bucket values within 1.48 % of their bounds", NULL);
		check(bound < 0.02, "the relative error bound is below 2 %", NULL);
	}

	/* hand-written encodings */
	memset(dense, 0, sizeof(dense));
	check(lat_encode(dense, buf) == 1 && buf[0] == LAT_FORMAT_VERSION,
		  "empty histogram is one version byte", NULL);
	dense[0] = 1;
	dense[3] = 300;
	{
		/* bucket 0 count 1: 00 01; gap 2, count 300 = 0xac 0x02 */
		const uint8_t want[] = {LAT_FORMAT_VERSION, 0x00, 0x01, 0x02, 0xac, 0x02};
		size_t		n = lat_encode(dense, buf);

		check(n == sizeof(want) && memcmp(buf, want, n) == 0,
			  "encoding of {0:1, 3:300}", NULL);
		memset(dense2, 0, sizeof(dense2));
		check(lat_decode_add(want, sizeof(want), dense2) == 0 &&
			  dense2[0] == 1 && dense2[3] == 300 && lat_total(dense2) == 301,
			  "decoding of {0:1, 3:300}", NULL);
	}

	/* malformed inputs */
	{
		const uint8_t bad_version[] = {9, 0, 1};
		const uint8_t truncated[] = {LAT_FORMAT_VERSION, 0x00, 0x81};
		const uint8_t zero_count[] = {LAT_FORMAT_VERSION, 0x00, 0x00};
		/* bucket 863 (the last), then the next one: 864 */
		const uint8_t past_end[] = {LAT_FORMAT_VERSION, 0xdf, 0x06, 0x01, 0x00, 0x01};
		const uint8_t last[] = {LAT_FORMAT_VERSION, 0xdf, 0x06, 0x01};
		const uint8_t missing_count[] = {LAT_FORMAT_VERSION, 0x05};
		const uint8_t too_long[] = {LAT_FORMAT_VERSION, 0x00, 0xff, 0xff, 0xff,
		0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f};

		memset(dense2, 0, sizeof(dense2));
		check(lat_decode_add(bad_version, sizeof(bad_version), dense2) < 0,
			  "wrong version rejected", NULL);
		check(lat_decode_add(truncated, sizeof(truncated), dense2) < 0,
			  "truncated varint rejected", NULL);
		check(lat_decode_add(zero_count, sizeof(zero_count), dense2) < 0,
			  "zero count rejected", NULL);
		check(lat_decode_add(past_end, sizeof(past_end), dense2) < 0,
			  "bucket past the end rejected", NULL);
		memset(dense2, 0, sizeof(dense2));
		check(lat_decode_add(last, sizeof(last), dense2) == 0 &&
			  dense2[LAT_NBUCKETS - 1] == 1, "the last bucket (gap 863) accepted", NULL);
		check(lat_decode_add(missing_count, sizeof(missing_count), dense2) < 0,
			  "missing count rejected", NULL);
		check(lat_decode_add(too_long, sizeof(too_long), dense2) < 0,
			  "count over 64 bits rejected", NULL);
		check(lat_decode_add(buf, 0, dense2) < 0, "empty input rejected", NULL);
	}

	/* random histograms: round trip, and merge = sum */
	{
		int			bad = 0;
		int			t;

		for (t = 0; t < 200; t++)
		{
			static uint64_t a[LAT_NBUCKETS],
						b[LAT_NBUCKETS],
						m[LAT_NBUCKETS];
			static uint8_t ea[LAT_MAX_ENCODED],
						eb[LAT_MAX_ENCODED];
			size_t		na,
						nb;
			int			k;

			memset(a, 0, sizeof(a));
			memset(b, 0, sizeof(b));
			memset(m, 0, sizeof(m));
			for (k = 0; k < 50; k++)
			{
				a[xorshift() % LAT_NBUCKETS] += xorshift() % 100000 + 1;
				b[xorshift() % LAT_NBUCKETS] += xorshift() >> (xorshift() % 64);
			}
			na = lat_encode(a, ea);
			nb = lat_encode(b, eb);
			if (lat_decode_add(ea, na, m) != 0 || lat_decode_add(eb, nb, m) != 0)
				bad++;
			for (k = 0; k < LAT_NBUCKETS; k++)
				if (m[k] != a[k] + b[k])
				{
					bad++;
					break;
				}
		}
		check(bad == 0, "200 random pairs: decode(encode(a)) + decode(encode(b)) = a + b",
			  NULL);
	}

	/* percentiles against exact percentile_disc over the raw values */
	{
		static const double ps[] = {0, 0.001, 0.25, 0.5, 0.9, 0.95, 0.99, 0.999, 1};
		int			sizes[] = {1, 2, 7, 100, 1001, 100000};
		double		worst = 0;
		int			s;

		for (s = 0; s < (int) (sizeof(sizes) / sizeof(sizes[0])); s++)
		{
			int			n = sizes[s];
			uint64_t   *v = malloc(sizeof(uint64_t) * n);
			int			k;

			memset(dense, 0, sizeof(dense));
			for (k = 0; k < n; k++)
			{
				/* log-normal-ish around 20 ms, from 50 us to 20 s */
				double		z = (uniform01() + uniform01() + uniform01() - 1.5) * 4;
				double		ms = 20.0 * exp(z);

				if (ms < 0.05)
					ms = 0.05;
				v[k] = (uint64_t) (ms * 1e6);
				dense[lat_bucket_of(v[k])]++;
			}
			qsort(v, n, sizeof(uint64_t), cmp_u64);
			for (k = 0; k < (int) (sizeof(ps) / sizeof(ps[0])); k++)
			{
				double		r = ceil(ps[k] * n);
				int			rank = r < 1 ? 1 : (int) r;
				double		exact = (double) v[rank - 1] / 1e6;
				double		est = lat_percentile_ms(dense, ps[k]);
				double		err = fabs(est - exact) / exact;

				if (err > worst)
					worst = err;
			}
			free(v);
		}
		snprintf(detail, sizeof(detail), "worst relative error %.5f", worst);
		check(worst <= (LAT_GAMMA - 1) / (LAT_GAMMA + 1) + 1e-9,
			  "percentiles within 1.48 % of percentile_disc", detail);
		printf("# %s\n", detail);
	}
	memset(dense, 0, sizeof(dense));
	check(lat_percentile_ms(dense, 0.5) < 0, "empty histogram has no percentile", NULL);

	/* the percentile read from the encoding = the dense path's, on random histograms
	 * (totals below 2^64: 120 counts below 2^56 at most) */
	{
		static const double ps[] = {0, 0.001, 0.25, 0.5, 0.9, 0.95, 0.99, 0.999, 1};
		int			bad = 0;
		int			t;
		double		v;
		size_t		n;

		for (t = 0; t < 500; t++)
		{
			int			k;
			int			used = (int) (xorshift() % 120) + 1;

			memset(dense, 0, sizeof(dense));
			for (k = 0; k < used; k++)
				dense[xorshift() % LAT_NBUCKETS] += (t % 3 == 0) ? (xorshift() >> (xorshift() % 56 + 8)) | 1
					: xorshift() % 300 + 1;
			n = lat_encode(dense, buf);
			for (k = 0; k < (int) (sizeof(ps) / sizeof(ps[0])); k++)
				if (lat_encoded_percentile_ms(buf, n, ps[k], &v) != 0 ||
					v != lat_percentile_ms(dense, ps[k]))
				{
					if (!bad)
						snprintf(detail, sizeof(detail), "histogram %d, p %g: %g, dense %g",
								 t, ps[k], v, lat_percentile_ms(dense, ps[k]));
					bad++;
				}
		}
		check(bad == 0, "500 random histograms: percentile of the encoding = of the dense histogram",
			  bad ? detail : NULL);
		memset(dense, 0, sizeof(dense));
		n = lat_encode(dense, buf);
		check(lat_encoded_percentile_ms(buf, n, 0.5, &v) == 0 && v < 0,
			  "empty encoding has no percentile", NULL);
		/* past 2^53 values the rank must stay within n: p = 1 is the last non-empty bucket */
		memset(dense, 0, sizeof(dense));
		dense[10] = (uint64_t) 1 << 53;
		dense[20] = 1;
		n = lat_encode(dense, buf);
		check(lat_percentile_ms(dense, 1.0) == lat_bucket_value_ms(20) &&
			  lat_encoded_percentile_ms(buf, n, 1.0, &v) == 0 && v == lat_bucket_value_ms(20),
			  "2^53 + 1 values: the 100th percentile is the last non-empty bucket", NULL);
		buf[0] = LAT_FORMAT_VERSION + 1;
		check(lat_encoded_percentile_ms(buf, n, 0.5, &v) < 0, "bad version rejected", NULL);
		{
			const uint8_t truncated[] = {LAT_FORMAT_VERSION, 0x00, 0x80};
			const uint8_t zero_count[] = {LAT_FORMAT_VERSION, 0x00, 0x00};
			const uint8_t past_end[] = {LAT_FORMAT_VERSION, 0xdf, 0x06, 0x01, 0x00, 0x01};

			check(lat_encoded_percentile_ms(truncated, sizeof(truncated), 0.5, &v) < 0 &&
				  lat_encoded_percentile_ms(zero_count, sizeof(zero_count), 0.5, &v) < 0 &&
				  lat_encoded_percentile_ms(past_end, sizeof(past_end), 0.5, &v) < 0,
				  "malformed encodings rejected (truncated, zero count, past the last bucket)", NULL);
		}
	}

	return tap_done();
}

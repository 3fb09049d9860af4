/*-------------------------------------------------------------------------
 * hash_mix.h
 *		The 64-bit mixer shared by apicount's hashes (header only).
 *-------------------------------------------------------------------------
 */
#ifndef APICOUNT_HASH_MIX_H
#define APICOUNT_HASH_MIX_H

/* the MurmurHash3 finalizer: a bijection mixing every bit into all others */
static inline uint64
apicount_mix64(uint64 h)
{
	h ^= h >> 33;
	h *= UINT64CONST(0xff51afd7ed558ccd);
	h ^= h >> 33;
	h *= UINT64CONST(0xc4ceb9fe1a85ec53);
	h ^= h >> 33;
	return h;
}

#endif

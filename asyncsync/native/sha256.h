/* SHA-256 (FIPS 180-4): a portable C compression function and, on x86 CPUs that have them, the
 * SHA extensions (SHA-NI: sha256rnds2, sha256msg1, sha256msg2), chosen at run time.
 *
 * Header-only (static functions): module.c is the only translation unit. */
#ifndef ASYNCSYNC_SHA256_H
#define ASYNCSYNC_SHA256_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#if (defined(__x86_64__) || defined(__i386__)) && (defined(__GNUC__) || defined(__clang__))
#define ASYNCSYNC_X86 1
#include <cpuid.h>
#include <immintrin.h>
#endif

static const uint32_t sha256_k[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
};

static const uint32_t sha256_init[8] = {
    0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19,
};

typedef void (*sha256_blocks_fn)(uint32_t state[8], const uint8_t *data, size_t blocks);

#define ROR32(x, n) (((x) >> (n)) | ((x) << (32 - (n))))

static inline uint32_t load_be32(const uint8_t *p) {
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}

static inline void store_be32(uint8_t *p, uint32_t v) {
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

static void sha256_blocks_portable(uint32_t state[8], const uint8_t *data, size_t blocks) {
    uint32_t w[64];
    while (blocks--) {
        for (int i = 0; i < 16; i++) w[i] = load_be32(data + 4 * i);
        for (int i = 16; i < 64; i++) {
            uint32_t s0 = ROR32(w[i - 15], 7) ^ ROR32(w[i - 15], 18) ^ (w[i - 15] >> 3);
            uint32_t s1 = ROR32(w[i - 2], 17) ^ ROR32(w[i - 2], 19) ^ (w[i - 2] >> 10);
            w[i] = w[i - 16] + s0 + w[i - 7] + s1;
        }
        uint32_t a = state[0], b = state[1], c = state[2], d = state[3];
        uint32_t e = state[4], f = state[5], g = state[6], h = state[7];
        for (int i = 0; i < 64; i++) {
            uint32_t t1 = h + (ROR32(e, 6) ^ ROR32(e, 11) ^ ROR32(e, 25)) + ((e & f) ^ (~e & g)) +
                          sha256_k[i] + w[i];
            uint32_t t2 = (ROR32(a, 2) ^ ROR32(a, 13) ^ ROR32(a, 22)) + ((a & b) ^ (a & c) ^ (b & c));
            h = g; g = f; f = e; e = d + t1;
            d = c; c = b; b = a; a = t1 + t2;
        }
        state[0] += a; state[1] += b; state[2] += c; state[3] += d;
        state[4] += e; state[5] += f; state[6] += g; state[7] += h;
        data += 64;
    }
}

#ifdef ASYNCSYNC_X86
/* Sixteen groups of four rounds. Group g feeds message words 4g..4g+3 (M[g % 4]) and, while it
 * runs, extends the schedule: sha256msg1 for words of group g + 3, sha256msg2 for group g + 1. */
__attribute__((target("sha,sse4.1,ssse3"))) static void
sha256_blocks_shani(uint32_t state[8], const uint8_t *data, size_t blocks) {
    const __m128i mask = _mm_set_epi64x(0x0c0d0e0f08090a0bULL, 0x0405060700010203ULL);
    __m128i tmp = _mm_loadu_si128((const __m128i *)&state[0]);
    __m128i st1 = _mm_loadu_si128((const __m128i *)&state[4]);
    tmp = _mm_shuffle_epi32(tmp, 0xB1);        /* CDAB */
    st1 = _mm_shuffle_epi32(st1, 0x1B);        /* EFGH */
    __m128i st0 = _mm_alignr_epi8(tmp, st1, 8); /* ABEF */
    st1 = _mm_blend_epi16(st1, tmp, 0xF0);      /* CDGH */
    while (blocks--) {
        __m128i abef = st0, cdgh = st1, msg, m[4];
#pragma GCC unroll 16
        for (int g = 0; g < 16; g++) {
            if (g < 4) m[g] = _mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)(data + 16 * g)), mask);
            msg = _mm_add_epi32(m[g & 3], _mm_loadu_si128((const __m128i *)&sha256_k[4 * g]));
            st1 = _mm_sha256rnds2_epu32(st1, st0, msg);
            if (g >= 3 && g <= 14) {
                __m128i t = _mm_alignr_epi8(m[g & 3], m[(g - 1) & 3], 4);
                m[(g + 1) & 3] = _mm_sha256msg2_epu32(_mm_add_epi32(m[(g + 1) & 3], t), m[g & 3]);
            }
            msg = _mm_shuffle_epi32(msg, 0x0E);
            st0 = _mm_sha256rnds2_epu32(st0, st1, msg);
            if (g >= 1 && g <= 12) m[(g - 1) & 3] = _mm_sha256msg1_epu32(m[(g - 1) & 3], m[g & 3]);
        }
        st0 = _mm_add_epi32(st0, abef);
        st1 = _mm_add_epi32(st1, cdgh);
        data += 64;
    }
    tmp = _mm_shuffle_epi32(st0, 0x1B);        /* FEBA */
    st1 = _mm_shuffle_epi32(st1, 0xB1);        /* DCHG */
    st0 = _mm_blend_epi16(tmp, st1, 0xF0);     /* DCBA */
    st1 = _mm_alignr_epi8(st1, tmp, 8);        /* HGFE */
    _mm_storeu_si128((__m128i *)&state[0], st0);
    _mm_storeu_si128((__m128i *)&state[4], st1);
}

/* Two independent one-block messages (each already padded: ``pa``, ``pb`` are 64 bytes),
 * their rounds interleaved: one message's sha256rnds2 chain waits on its own latency, so two
 * chains keep the unit about twice as busy. Digests (32 bytes, big-endian words) to oa, ob. */
__attribute__((target("sha,sse4.1,ssse3"))) static void
sha256_one_block_x2_shani(const uint8_t *pa, const uint8_t *pb, uint8_t *oa, uint8_t *ob) {
    const __m128i mask = _mm_set_epi64x(0x0c0d0e0f08090a0bULL, 0x0405060700010203ULL);
    __m128i tmp = _mm_shuffle_epi32(_mm_loadu_si128((const __m128i *)&sha256_init[0]), 0xB1);
    __m128i h1 = _mm_shuffle_epi32(_mm_loadu_si128((const __m128i *)&sha256_init[4]), 0x1B);
    const __m128i abef = _mm_alignr_epi8(tmp, h1, 8), cdgh = _mm_blend_epi16(h1, tmp, 0xF0);
    __m128i a0 = abef, a1 = cdgh, b0 = abef, b1 = cdgh, ma[4], mb[4], xa, xb;
#pragma GCC unroll 16
    for (int g = 0; g < 16; g++) {
        if (g < 4) {
            ma[g] = _mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)(pa + 16 * g)), mask);
            mb[g] = _mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)(pb + 16 * g)), mask);
        }
        __m128i k = _mm_loadu_si128((const __m128i *)&sha256_k[4 * g]);
        xa = _mm_add_epi32(ma[g & 3], k);
        xb = _mm_add_epi32(mb[g & 3], k);
        a1 = _mm_sha256rnds2_epu32(a1, a0, xa);
        b1 = _mm_sha256rnds2_epu32(b1, b0, xb);
        if (g >= 3 && g <= 14) {
            __m128i ta = _mm_alignr_epi8(ma[g & 3], ma[(g - 1) & 3], 4);
            __m128i tb = _mm_alignr_epi8(mb[g & 3], mb[(g - 1) & 3], 4);
            ma[(g + 1) & 3] = _mm_sha256msg2_epu32(_mm_add_epi32(ma[(g + 1) & 3], ta), ma[g & 3]);
            mb[(g + 1) & 3] = _mm_sha256msg2_epu32(_mm_add_epi32(mb[(g + 1) & 3], tb), mb[g & 3]);
        }
        xa = _mm_shuffle_epi32(xa, 0x0E);
        xb = _mm_shuffle_epi32(xb, 0x0E);
        a0 = _mm_sha256rnds2_epu32(a0, a1, xa);
        b0 = _mm_sha256rnds2_epu32(b0, b1, xb);
        if (g >= 1 && g <= 12) {
            ma[(g - 1) & 3] = _mm_sha256msg1_epu32(ma[(g - 1) & 3], ma[g & 3]);
            mb[(g - 1) & 3] = _mm_sha256msg1_epu32(mb[(g - 1) & 3], mb[g & 3]);
        }
    }
    const __m128i be = _mm_set_epi8(12, 13, 14, 15, 8, 9, 10, 11, 4, 5, 6, 7, 0, 1, 2, 3);
    __m128i s0[2] = {_mm_add_epi32(a0, abef), _mm_add_epi32(b0, abef)};
    __m128i s1[2] = {_mm_add_epi32(a1, cdgh), _mm_add_epi32(b1, cdgh)};
    uint8_t *out[2] = {oa, ob};
    for (int i = 0; i < 2; i++) {
        __m128i t = _mm_shuffle_epi32(s0[i], 0x1B);  /* FEBA */
        __m128i u = _mm_shuffle_epi32(s1[i], 0xB1);  /* DCHG */
        __m128i dcba = _mm_blend_epi16(t, u, 0xF0);
        __m128i hgfe = _mm_alignr_epi8(u, t, 8);
        _mm_storeu_si128((__m128i *)out[i], _mm_shuffle_epi8(dcba, be));
        _mm_storeu_si128((__m128i *)(out[i] + 16), _mm_shuffle_epi8(hgfe, be));
    }
}

static int cpu_has_shani(void) {
    unsigned a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d)) return 0;
    if (!(c & (1u << 9)) || !(c & (1u << 19))) return 0; /* SSSE3, SSE4.1 */
    if (__get_cpuid_max(0, NULL) < 7) return 0;
    __cpuid_count(7, 0, a, b, c, d);
    return (b >> 29) & 1; /* SHA */
}
#endif

/* ``len`` (at most 55) bytes at ``msg`` as one padded 64-byte block. */
static inline void sha256_pad_block(const uint8_t *msg, size_t len, uint8_t block[64]) {
    memcpy(block, msg, len);
    block[len] = 0x80;
    memset(block + len + 1, 0, 64 - len - 1 - 8);
    uint64_t bits = (uint64_t)len * 8;
    for (int i = 0; i < 8; i++) block[63 - i] = (uint8_t)(bits >> (8 * i));
}

/* The SHA-256 of ``len`` bytes at ``msg`` into ``out`` (32 bytes). */
static inline void sha256_digest(sha256_blocks_fn blocks, const uint8_t *msg, size_t len,
                                 uint8_t out[32]) {
    uint32_t st[8];
    uint8_t tail[128];
    memcpy(st, sha256_init, sizeof st);
    size_t full = len / 64;
    if (full) blocks(st, msg, full);
    size_t rest = len - 64 * full;
    memcpy(tail, msg + 64 * full, rest);
    tail[rest] = 0x80;
    size_t tail_len = rest < 56 ? 64 : 128;
    memset(tail + rest + 1, 0, tail_len - rest - 1 - 8);
    uint64_t bits = (uint64_t)len * 8;
    for (int i = 0; i < 8; i++) tail[tail_len - 1 - i] = (uint8_t)(bits >> (8 * i));
    blocks(st, tail, tail_len / 64);
    for (int i = 0; i < 8; i++) store_be32(out + 4 * i, st[i]);
}

#endif

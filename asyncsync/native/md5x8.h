/* MD5 of eight independent messages at once, one per 32-bit lane of AVX2 registers.
 *
 * One MD5 stream is a chain of dependent additions and rotations, so a core runs it at about
 * 4.5 cycles a byte however wide it is (OpenSSL's assembly: about 600 MB/s on the 2.45 GHz AMD
 * EPYC of benchmarks/README.md). Eight streams side by side keep the vector units busy instead:
 * 2.4 GB/s in all on the same core. Used when one worker writes several part files in turn
 * (asyncsync/pipeline/parts.py: write_parts). Header-only: module.c is the only translation
 * unit. */
#ifndef ASYNCSYNC_MD5X8_H
#define ASYNCSYNC_MD5X8_H

#include "md5.h"

#if (defined(__x86_64__) || defined(__i386__)) && (defined(__GNUC__) || defined(__clang__))
#include <cpuid.h>
#include <immintrin.h>
#define ASYNCSYNC_MD5X8 1

static int cpu_has_avx2(void) {
    unsigned a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d)) return 0;
    if (!(c & (1u << 27)) || !(c & (1u << 28))) return 0; /* OSXSAVE, AVX */
    unsigned lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    if ((lo & 6) != 6) return 0; /* the OS saves the YMM registers */
    if (__get_cpuid_max(0, NULL) < 7) return 0;
    __cpuid_count(7, 0, a, b, c, d);
    return (b >> 5) & 1; /* AVX2 */
}

#define MD5X8_ROTL(x, s) \
    _mm256_or_si256(_mm256_slli_epi32((x), (s)), _mm256_srli_epi32((x), 32 - (s)))

/* ``blocks`` 64-byte blocks of each of 8 messages (``p[l]``: lane l's next block) into the
 * states ``st`` (st[i][l]: word i of lane l's state). */
__attribute__((target("avx2"))) static void md5x8_blocks(uint32_t st[4][8],
                                                        const uint8_t *const p[8], size_t blocks) {
    const __m256i ones = _mm256_set1_epi32(-1);
    __m256i h[4];
    for (int i = 0; i < 4; i++) h[i] = _mm256_loadu_si256((const __m256i *)st[i]);
    for (size_t blk = 0; blk < blocks; blk++) {
        __m256i x[16];
        for (int half = 0; half < 2; half++) {
            /* rows: lane l's words 8*half .. 8*half+7; transposed into x[8*half + w] */
            __m256i r[8];
            for (int l = 0; l < 8; l++)
                r[l] = _mm256_loadu_si256((const __m256i *)(p[l] + 64 * blk + 32 * half));
            __m256i t0 = _mm256_unpacklo_epi32(r[0], r[1]);
            __m256i t1 = _mm256_unpackhi_epi32(r[0], r[1]);
            __m256i t2 = _mm256_unpacklo_epi32(r[2], r[3]);
            __m256i t3 = _mm256_unpackhi_epi32(r[2], r[3]);
            __m256i t4 = _mm256_unpacklo_epi32(r[4], r[5]);
            __m256i t5 = _mm256_unpackhi_epi32(r[4], r[5]);
            __m256i t6 = _mm256_unpacklo_epi32(r[6], r[7]);
            __m256i t7 = _mm256_unpackhi_epi32(r[6], r[7]);
            __m256i u0 = _mm256_unpacklo_epi64(t0, t2), u1 = _mm256_unpackhi_epi64(t0, t2);
            __m256i u2 = _mm256_unpacklo_epi64(t1, t3), u3 = _mm256_unpackhi_epi64(t1, t3);
            __m256i u4 = _mm256_unpacklo_epi64(t4, t6), u5 = _mm256_unpackhi_epi64(t4, t6);
            __m256i u6 = _mm256_unpacklo_epi64(t5, t7), u7 = _mm256_unpackhi_epi64(t5, t7);
            __m256i *o = x + 8 * half;
            o[0] = _mm256_permute2x128_si256(u0, u4, 0x20);
            o[1] = _mm256_permute2x128_si256(u1, u5, 0x20);
            o[2] = _mm256_permute2x128_si256(u2, u6, 0x20);
            o[3] = _mm256_permute2x128_si256(u3, u7, 0x20);
            o[4] = _mm256_permute2x128_si256(u0, u4, 0x31);
            o[5] = _mm256_permute2x128_si256(u1, u5, 0x31);
            o[6] = _mm256_permute2x128_si256(u2, u6, 0x31);
            o[7] = _mm256_permute2x128_si256(u3, u7, 0x31);
        }
        __m256i a = h[0], b = h[1], c = h[2], d = h[3];
#pragma GCC unroll 64
        for (int i = 0; i < 64; i++) {
            __m256i f;
            int k;
            if (i < 16) {
                f = _mm256_xor_si256(d, _mm256_and_si256(b, _mm256_xor_si256(c, d)));
                k = i;
            } else if (i < 32) {
                f = _mm256_xor_si256(c, _mm256_and_si256(d, _mm256_xor_si256(b, c)));
                k = (5 * i + 1) & 15;
            } else if (i < 48) {
                f = _mm256_xor_si256(_mm256_xor_si256(b, c), d);
                k = (3 * i + 5) & 15;
            } else {
                f = _mm256_xor_si256(c, _mm256_or_si256(b, _mm256_xor_si256(d, ones)));
                k = (7 * i) & 15;
            }
            f = _mm256_add_epi32(_mm256_add_epi32(f, a),
                                 _mm256_add_epi32(_mm256_set1_epi32((int)md5_t[i]), x[k]));
            a = d; d = c; c = b;
            b = _mm256_add_epi32(b, MD5X8_ROTL(f, md5_s[i]));
        }
        h[0] = _mm256_add_epi32(h[0], a);
        h[1] = _mm256_add_epi32(h[1], b);
        h[2] = _mm256_add_epi32(h[2], c);
        h[3] = _mm256_add_epi32(h[3], d);
    }
    for (int i = 0; i < 4; i++) _mm256_storeu_si256((__m256i *)st[i], h[i]);
}
#endif /* x86 */

/* Feed ``len[l]`` bytes at ``data[l]`` to each of the ``n`` contexts ``ctx[l]``: what
 * md5_update does to each, with the blocks the lanes have in common hashed side by side when
 * ``simd`` (the CPU has AVX2). */
static void md5_lanes_update(md5_ctx *ctx, int n, const uint8_t *const *data, const size_t *len,
                             int simd) {
    const uint8_t *p[8];
    size_t left[8];
    for (int l = 0; l < n; l++) {
        p[l] = data[l];
        left[l] = len[l];
        size_t have = (size_t)(ctx[l].len & 63);
        ctx[l].len += left[l];
        if (have) { /* complete the partial block first */
            size_t take = 64 - have < left[l] ? 64 - have : left[l];
            memcpy(ctx[l].buf + have, p[l], take);
            p[l] += take;
            left[l] -= take;
            if (have + take == 64) md5_blocks(ctx[l].h, ctx[l].buf, 1);
            else continue; /* all of it went into the partial block */
        }
    }
#ifdef ASYNCSYNC_MD5X8
    int active[8], m = 0;
    size_t common = (size_t)-1;
    for (int l = 0; l < n; l++)
        if (left[l] >= 64) {
            active[m++] = l;
            if (left[l] / 64 < common) common = left[l] / 64;
        }
    if (simd && m >= 2) {
        uint32_t st[4][8];
        const uint8_t *q[8];
        for (int j = 0; j < 8; j++) { /* idle slots hash a copy of the first lane's blocks */
            int l = active[j < m ? j : 0];
            q[j] = p[l];
            for (int i = 0; i < 4; i++) st[i][j] = ctx[l].h[i];
        }
        md5x8_blocks(st, q, common);
        for (int j = 0; j < m; j++) {
            int l = active[j];
            for (int i = 0; i < 4; i++) ctx[l].h[i] = st[i][j];
            p[l] += 64 * common;
            left[l] -= 64 * common;
        }
    }
#else
    (void)simd;
#endif
    for (int l = 0; l < n; l++) {
        if (left[l] >= 64) {
            md5_blocks(ctx[l].h, p[l], left[l] / 64);
            p[l] += left[l] & ~(size_t)63;
            left[l] &= 63;
        }
        if (left[l]) memcpy(ctx[l].buf, p[l], left[l]);
    }
}
#endif

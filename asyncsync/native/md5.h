/* MD5 (RFC 1321), incremental, portable C. Written for this project from the RFC's definition.
 *
 * Header-only (static functions): module.c is the only translation unit. */
#ifndef ASYNCSYNC_MD5_H
#define ASYNCSYNC_MD5_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

typedef struct {
    uint32_t h[4];
    uint64_t len;     /* bytes fed so far */
    uint8_t buf[64];  /* a partial block */
} md5_ctx;

static const uint32_t md5_t[64] = {
    0xd76aa478, 0xe8c7b756, 0x242070db, 0xc1bdceee, 0xf57c0faf, 0x4787c62a, 0xa8304613, 0xfd469501,
    0x698098d8, 0x8b44f7af, 0xffff5bb1, 0x895cd7be, 0x6b901122, 0xfd987193, 0xa679438e, 0x49b40821,
    0xf61e2562, 0xc040b340, 0x265e5a51, 0xe9b6c7aa, 0xd62f105d, 0x02441453, 0xd8a1e681, 0xe7d3fbc8,
    0x21e1cde6, 0xc33707d6, 0xf4d50d87, 0x455a14ed, 0xa9e3e905, 0xfcefa3f8, 0x676f02d9, 0x8d2a4c8a,
    0xfffa3942, 0x8771f681, 0x6d9d6122, 0xfde5380c, 0xa4beea44, 0x4bdecfa9, 0xf6bb4b60, 0xbebfbc70,
    0x289b7ec6, 0xeaa127fa, 0xd4ef3085, 0x04881d05, 0xd9d4d039, 0xe6db99e5, 0x1fa27cf8, 0xc4ac5665,
    0xf4292244, 0x432aff97, 0xab9423a7, 0xfc93a039, 0x655b59c3, 0x8f0ccc92, 0xffeff47d, 0x85845dd1,
    0x6fa87e4f, 0xfe2ce6e0, 0xa3014314, 0x4e0811a1, 0xf7537e82, 0xbd3af235, 0x2ad7d2bb, 0xeb86d391,
};

static const uint8_t md5_s[64] = {
    7, 12, 17, 22, 7, 12, 17, 22, 7, 12, 17, 22, 7, 12, 17, 22,
    5, 9,  14, 20, 5, 9,  14, 20, 5, 9,  14, 20, 5, 9,  14, 20,
    4, 11, 16, 23, 4, 11, 16, 23, 4, 11, 16, 23, 4, 11, 16, 23,
    6, 10, 15, 21, 6, 10, 15, 21, 6, 10, 15, 21, 6, 10, 15, 21,
};

static inline uint32_t load_le32(const uint8_t *p) {
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}

static void md5_blocks(uint32_t h[4], const uint8_t *data, size_t blocks) {
    while (blocks--) {
        uint32_t x[16];
        for (int i = 0; i < 16; i++) x[i] = load_le32(data + 4 * i);
        uint32_t a = h[0], b = h[1], c = h[2], d = h[3];
#pragma GCC unroll 64
        for (int i = 0; i < 64; i++) {
            uint32_t f;
            int k;
            if (i < 16) { f = d ^ (b & (c ^ d)); k = i; }
            else if (i < 32) { f = c ^ (d & (b ^ c)); k = (5 * i + 1) & 15; }
            else if (i < 48) { f = b ^ c ^ d; k = (3 * i + 5) & 15; }
            else { f = c ^ (b | ~d); k = (7 * i) & 15; }
            f += a + md5_t[i] + x[k];
            a = d; d = c; c = b;
            b += (f << md5_s[i]) | (f >> (32 - md5_s[i]));
        }
        h[0] += a; h[1] += b; h[2] += c; h[3] += d;
        data += 64;
    }
}

static void md5_init(md5_ctx *ctx) {
    ctx->h[0] = 0x67452301; ctx->h[1] = 0xefcdab89; ctx->h[2] = 0x98badcfe; ctx->h[3] = 0x10325476;
    ctx->len = 0;
}

static void md5_update(md5_ctx *ctx, const uint8_t *data, size_t n) {
    size_t have = (size_t)(ctx->len & 63);
    ctx->len += n;
    if (have) {
        size_t take = 64 - have < n ? 64 - have : n;
        memcpy(ctx->buf + have, data, take);
        data += take; n -= take; have += take;
        if (have < 64) return;
        md5_blocks(ctx->h, ctx->buf, 1);
    }
    if (n >= 64) {
        md5_blocks(ctx->h, data, n / 64);
        data += n & ~(size_t)63; n &= 63;
    }
    memcpy(ctx->buf, data, n);
}

static void md5_final(md5_ctx *ctx, uint8_t out[16]) {
    uint64_t bits = ctx->len * 8;
    size_t have = (size_t)(ctx->len & 63);
    uint8_t pad[128];
    size_t pad_len = have < 56 ? 64 - have : 128 - have;
    memset(pad, 0, pad_len);
    pad[0] = 0x80;
    for (int i = 0; i < 8; i++) pad[pad_len - 8 + i] = (uint8_t)(bits >> (8 * i));
    md5_update(ctx, pad, pad_len);
    for (int i = 0; i < 4; i++) {
        out[4 * i] = (uint8_t)ctx->h[i];
        out[4 * i + 1] = (uint8_t)(ctx->h[i] >> 8);
        out[4 * i + 2] = (uint8_t)(ctx->h[i] >> 16);
        out[4 * i + 3] = (uint8_t)(ctx->h[i] >> 24);
    }
}

/* The MD5 of ``len`` bytes at ``msg`` into ``out`` (16 bytes). */
static inline void md5_digest(const uint8_t *msg, size_t len, uint8_t out[16]) {
    md5_ctx ctx;
    md5_init(&ctx);
    md5_update(&ctx, msg, len);
    md5_final(&ctx, out);
}

#endif

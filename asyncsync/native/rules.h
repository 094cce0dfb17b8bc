/* The ID rules, one function per kind, on one line's bytes.
 *
 * They mirror asyncsync/rules/ids.py (the reference) byte for byte; the property tests in
 * tests/test_native_engine.py hold the two together. Each function takes the line already
 * trimmed of the reference's whitespace (see is_trim) and not empty, writes the normalized ID
 * to ``out`` and returns a status. DEFER hands the line back to the Python reference: for
 * what this file does not implement (non-ASCII email addresses, whose lowercasing and
 * whitespace are Unicode's; phone numbers read with a default country). Deferring is always
 * correct, only slower. To change a rule: change ids.py and the function here together. */
#ifndef ASYNCSYNC_RULES_H
#define ASYNCSYNC_RULES_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

enum status { ST_VALID = 0, ST_EMPTY = 1, ST_MALFORMED = 2, ST_ZERO_ID = 3, ST_DEFER = 4 };
enum kind { K_MAID = 0, K_EMAIL = 1, K_PHONE = 2, K_SHA256 = 3, K_MD5 = 4 };

/* Flags of one call. */
#define F_DEFER_PHONE_LOCAL 1u /* a default country is set: numbers without +/00 go to Python */

/* bytes.strip()'s default set in ids.py: _WS = b" \t\r\n\x0b\x0c" */
static inline int is_trim(uint8_t c) {
    return c == ' ' || (c >= '\t' && c <= '\r');
}

/* 0-15 for a hex digit of either case, 0xFF otherwise. */
static uint8_t hex_value[256];

static void rules_init(void) {
    memset(hex_value, 0xFF, sizeof hex_value);
    for (int i = 0; i < 10; i++) hex_value['0' + i] = (uint8_t)i;
    for (int i = 0; i < 6; i++) {
        hex_value['a' + i] = (uint8_t)(10 + i);
        hex_value['A' + i] = (uint8_t)(10 + i);
    }
}

static inline uint8_t ascii_lower(uint8_t c) {
    return (c >= 'A' && c <= 'Z') ? (uint8_t)(c | 0x20) : c;
}

#if defined(__SSE2__)
#include <emmintrin.h>

/* 16 bytes of a mobile ID at ``p`` (``hyphens``: the bits of the positions that must be '-'):
 * 0 when every other byte is a hex digit of either case and those are '-'; the bits of the
 * non-'0' hex digits go to ``*nonzero``. Bytes of 0x80 and up compare as negative: no digit.
 * The bytes OR 0x20 go to ``out``: lowercased, as digits and '-' have that bit already. */
static inline int maid_block(const uint8_t *p, int hyphens, int *nonzero, uint8_t *out) {
    __m128i v = _mm_loadu_si128((const __m128i *)p);
    __m128i low = _mm_or_si128(v, _mm_set1_epi8(0x20));
    _mm_storeu_si128((__m128i *)out, low);
    __m128i digit = _mm_and_si128(_mm_cmpgt_epi8(v, _mm_set1_epi8('0' - 1)),
                                  _mm_cmplt_epi8(v, _mm_set1_epi8('9' + 1)));
    __m128i af = _mm_and_si128(_mm_cmpgt_epi8(low, _mm_set1_epi8('a' - 1)),
                               _mm_cmplt_epi8(low, _mm_set1_epi8('f' + 1)));
    int hex = _mm_movemask_epi8(_mm_or_si128(digit, af));
    int dash = _mm_movemask_epi8(_mm_cmpeq_epi8(v, _mm_set1_epi8('-')));
    int zero = _mm_movemask_epi8(_mm_cmpeq_epi8(v, _mm_set1_epi8('0')));
    *nonzero |= ~zero & ~hyphens & 0xFFFF;
    return ((dash & hyphens) ^ hyphens) | ((hex | hyphens) ^ 0xFFFF);
}
#endif

/* Mobile ID (normalize_maid): 8-4-4-4-12 hex with hyphens, lowercased; all-zero ID dropped.
 * ``out``: 36 bytes. */
static inline int rule_maid(const uint8_t *s, size_t n, uint8_t *out) {
    if (n != 36) return ST_MALFORMED;
#if defined(__SSE2__)
    /* Bytes 0-15, 16-31 and 20-35 (overlapping); hyphens at 8, 13, 18 and 23. */
    int nonzero = 0;
    int bad = maid_block(s, (1 << 8) | (1 << 13), &nonzero, out) |
              maid_block(s + 16, (1 << 2) | (1 << 7), &nonzero, out + 16) |
              maid_block(s + 20, 1 << 3, &nonzero, out + 20);
    if (bad) return ST_MALFORMED;
    return nonzero ? ST_VALID : ST_ZERO_ID;
#else
    uint8_t bad = 0, any = 0;
    for (int i = 0; i < 36; i++) {
        uint8_t c = s[i];
        if (i == 8 || i == 13 || i == 18 || i == 23) {
            bad |= (uint8_t)(c != '-');
            out[i] = c;
        } else {
            uint8_t v = hex_value[c];
            bad |= (uint8_t)(v >> 4);
            any |= (uint8_t)(v & 0x0F);
            /* '0'-'9' already have bit 0x20 set; it lowercases 'A'-'F'. */
            out[i] = (uint8_t)(c | 0x20);
        }
    }
    if (bad) return ST_MALFORMED;
    return any ? ST_VALID : ST_ZERO_ID;
#endif
}

/* Already hashed (normalize_hashed): ``hex_len`` hex digits of either case, decoded into
 * ``out`` (hex_len / 2 bytes): the part writer encodes every kind back to lowercase hex. */
static inline int rule_hashed(const uint8_t *s, size_t n, size_t hex_len, uint8_t *out) {
    if (n != hex_len) return ST_MALFORMED;
    uint8_t bad = 0;
    for (size_t i = 0; i < hex_len; i += 2) {
        uint8_t hi = hex_value[s[i]], lo = hex_value[s[i + 1]];
        bad |= (uint8_t)((hi | lo) >> 4);
        out[i / 2] = (uint8_t)((hi << 4) | (lo & 0x0F));
    }
    return bad ? ST_MALFORMED : ST_VALID;
}

/* Email (normalize_email): every space removed, lowercased, a ``+tag`` removed from the local
 * part; one ``@``, a non-empty local part, a dotted domain with no empty label; no control
 * character. ``out``: at least n bytes; its length goes to ``*out_len``. */
#if defined(__SSE2__) && defined(__GNUC__)
/* rule_email for the common line: at most 64 bytes, no space, nothing below 0x20, no DEL, all
 * ASCII. Returns -1 for any other line (the byte loop below judges it). The line is classified
 * 16 bytes at a time into bit masks (bit i: byte i), on which the rule's checks are shifts. */
static inline int email_fast(const uint8_t *s, size_t n, uint8_t *out, size_t *out_len) {
    if (n > 64) return -1;
    uint8_t buf[64], low[64];
    memcpy(buf, s, n);
    memset(buf + n, 0, sizeof buf - n);
    uint64_t odd = 0, ats = 0, plus = 0, dots = 0;
    for (size_t k = 0; k < n; k += 16) {
        __m128i v = _mm_loadu_si128((const __m128i *)(buf + k));
        /* signed: bytes of 0x80 and up are below 0x21 as well */
        int bad = _mm_movemask_epi8(_mm_or_si128(_mm_cmplt_epi8(v, _mm_set1_epi8(0x21)),
                                                 _mm_cmpeq_epi8(v, _mm_set1_epi8(0x7F))));
        __m128i upper = _mm_and_si128(_mm_cmpgt_epi8(v, _mm_set1_epi8('A' - 1)),
                                      _mm_cmplt_epi8(v, _mm_set1_epi8('Z' + 1)));
        _mm_storeu_si128((__m128i *)(low + k),
                         _mm_or_si128(v, _mm_and_si128(upper, _mm_set1_epi8(0x20))));
        odd |= (uint64_t)(unsigned)bad << k;
        ats |= (uint64_t)(unsigned)_mm_movemask_epi8(_mm_cmpeq_epi8(v, _mm_set1_epi8('@'))) << k;
        plus |= (uint64_t)(unsigned)_mm_movemask_epi8(_mm_cmpeq_epi8(v, _mm_set1_epi8('+'))) << k;
        dots |= (uint64_t)(unsigned)_mm_movemask_epi8(_mm_cmpeq_epi8(v, _mm_set1_epi8('.'))) << k;
    }
    uint64_t line = n == 64 ? ~(uint64_t)0 : (((uint64_t)1 << n) - 1);
    if (odd & line) return -1;
    ats &= line;
    if (!ats || (ats & (ats - 1))) return ST_MALFORMED; /* not exactly one '@' */
    size_t at = (size_t)__builtin_ctzll(ats);
    uint64_t tag = plus & (ats - 1); /* a '+' before the '@' */
    size_t local = tag ? (size_t)__builtin_ctzll(tag) : at;
    if (local == 0) return ST_MALFORMED;
    size_t dn = n - at - 1;
    if (dn == 0) return ST_MALFORMED;
    uint64_t dom = (dots & line) >> (at + 1); /* bit i: domain byte i is '.' */
    if (!dom || (dom & 1) || ((dom >> (dn - 1)) & 1) || (dom & (dom >> 1))) return ST_MALFORMED;
    memcpy(out, low, local);
    memcpy(out + local, low + at, dn + 1); /* "@domain" after the tag's cut */
    *out_len = local + 1 + dn;
    return ST_VALID;
}
#endif

static inline int rule_email(const uint8_t *s, size_t n, uint8_t *out, size_t *out_len) {
#if defined(__SSE2__) && defined(__GNUC__)
    int fast = email_fast(s, n, out, out_len);
    if (fast >= 0) return fast;
#endif
    size_t o = 0, at = 0;
    int ats = 0;
    for (size_t i = 0; i < n; i++) {
        uint8_t c = s[i];
        if (c >= 0x80) return ST_DEFER; /* UTF-8: Unicode lowercasing and whitespace */
        if (c == ' ') continue;
        if (c < 0x20 || c == 0x7F) return ST_MALFORMED;
        if (c == '@') {
            ats++;
            at = o;
        }
        out[o++] = ascii_lower(c);
    }
    if (ats != 1) return ST_MALFORMED;
    size_t local = 0;
    while (local < at && out[local] != '+') local++;
    if (local == 0) return ST_MALFORMED;
    const uint8_t *dom = out + at + 1;
    size_t dn = o - at - 1;
    int dotted = 0;
    if (dn == 0 || dom[0] == '.' || dom[dn - 1] == '.') return ST_MALFORMED;
    for (size_t i = 0; i < dn; i++) {
        if (dom[i] == '.') {
            dotted = 1;
            if (dom[i + 1] == '.') return ST_MALFORMED; /* i + 1 < dn: the last byte is no dot */
        }
    }
    if (!dotted) return ST_MALFORMED;
    if (local < at) memmove(out + local, out + at, dn + 1); /* "@domain" after the tag's cut */
    *out_len = local + 1 + dn;
    return ST_VALID;
}

/* Phone (normalize_phone): digits only, with the country code, no ``+``; 7 to 15 digits.
 * Spaces, ``-``, ``(``, ``)``, ``.`` and ``+`` are dropped, anything else is malformed. A ``+``
 * before the first digit, or a leading ``00``, marks an international number (the ``00`` is
 * dropped); a single leading ``0`` marks a national one, which has no country code: malformed
 * (with a default country: Python's), and sets ``*national``. Bare digits already carry the
 * country code. ``out``: at least 16 bytes. */
static inline int rule_phone(const uint8_t *s, size_t n, unsigned flags, uint8_t *out,
                             size_t *out_len, int *national) {
    uint8_t d[18];
    size_t nd = 0;
    int plus = 0, bad = 0;
    for (size_t i = 0; i < n; i++) {
        uint8_t c = s[i];
        if (c >= '0' && c <= '9') {
            if (nd < sizeof d) d[nd] = c;
            nd++;
        } else if (c == '+') {
            if (nd == 0) plus = 1;
        } else if (c != ' ' && c != '-' && c != '(' && c != ')' && c != '.') {
            bad = 1;
        }
    }
    size_t skip = 0;
    if (!plus && nd >= 2 && d[0] == '0' && d[1] == '0') {
        skip = 2; /* international prefix */
    } else if (!plus) {
        if (flags & F_DEFER_PHONE_LOCAL) return ST_DEFER; /* read with the default country */
        if (nd >= 1 && d[0] == '0') { /* national: no country code (is_national_phone) */
            *national = 1;
            return ST_MALFORMED;
        }
    }
    if (bad) return (flags & F_DEFER_PHONE_LOCAL) ? ST_DEFER : ST_MALFORMED;
    size_t len = nd - skip;
    if (len < 7 || len > 15 || d[skip] == '0') return ST_MALFORMED;
    memcpy(out, d + skip, len);
    *out_len = len;
    return ST_VALID;
}

#endif

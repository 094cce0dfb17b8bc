/* asyncsync._native: the hot loop of ``prepare`` in C (see asyncsync/rules/hashing.py).
 *
 * hash_lines() takes a whole chunk and, without the GIL, splits it into lines, trims,
 * validates and normalizes each line (rules.h) and writes the binary digest of every valid one
 * (sha256.h, md5.h) into one buffer, in line order. Lines that rules.h hands back (DEFER) get a
 * zeroed slot in that buffer and are returned to Python, which normalizes them with the
 * reference rules and fills or drops their slot. hash_arrow() does the same for the values of
 * an Arrow binary array, straight from its value buffer through its offsets and validity bitmap
 * (a Parquet column), each value one row. hex_lines() is the part writer's encoder.
 *
 * Needs only a C compiler and Python's headers. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <stdlib.h>

#include "md5.h"
#include "md5x8.h"
#include "rules.h"
#include "sha256.h"

enum algo { A_SHA256 = 0, A_MD5 = 1 };

static sha256_blocks_fn sha256_blocks = sha256_blocks_portable;
static int have_shani = 0;

typedef struct {
    int64_t index, slot, start, end;
} deferred_line;

typedef struct {
    /* in */
    const uint8_t *data;
    size_t len;
    const int64_t *bounds; /* (start, end) per row, or NULL: split data on '\n' */
    const void *offsets;   /* or: Arrow offsets (int32 or int64), row r = [off[r], off[r+1]) */
    int wide;              /* offsets are int64 */
    const uint8_t *validity; /* Arrow validity bitmap (NULL: no null), bit = first + row */
    size_t first;          /* the array's offset into its offsets and bitmap */
    size_t rows;
    int kind, algo;
    unsigned flags;
    size_t sample_cap, dsize;
    uint8_t *digests;
    /* out */
    size_t slots;
    Py_ssize_t counts[4];
    Py_ssize_t national; /* phone lines malformed for being national numbers */
    int64_t *sample_index;
    uint8_t *sample_reason;
    size_t samples;
    deferred_line *deferred;
    size_t n_deferred, deferred_cap;
    uint8_t *scratch;
    size_t scratch_cap;
    int no_memory;
    /* SHA-NI, short messages: one padded block waits for a second to be hashed with it */
    int pair;
    uint8_t *held_out;
    uint8_t held[64];
} chunk_job;

/* The digest of a block still waiting for its pair. */
static void flush_held(chunk_job *job) {
    if (!job->held_out) return;
    uint32_t st[8];
    memcpy(st, sha256_init, sizeof st);
    sha256_blocks(st, job->held, 1);
    for (int i = 0; i < 8; i++) store_be32(job->held_out + 4 * i, st[i]);
    job->held_out = NULL;
}

static inline void digest_into(chunk_job *job, const uint8_t *msg, size_t n, uint8_t *out) {
    if (job->algo == A_MD5) {
        md5_digest(msg, n, out);
        return;
    }
#ifdef ASYNCSYNC_X86
    if (job->pair && n <= 55) {
        if (!job->held_out) {
            sha256_pad_block(msg, n, job->held);
            job->held_out = out;
            return;
        }
        uint8_t block[64];
        sha256_pad_block(msg, n, block);
        sha256_one_block_x2_shani(job->held, block, job->held_out, out);
        job->held_out = NULL;
        return;
    }
#endif
    sha256_digest(sha256_blocks, msg, n, out);
}

static int grow_scratch(chunk_job *job, size_t n) {
    if (n <= job->scratch_cap) return 1;
    size_t cap = n < 256 ? 256 : n;
    uint8_t *p = realloc(job->scratch, cap);
    if (!p) return 0;
    job->scratch = p;
    job->scratch_cap = cap;
    return 1;
}

static void reject_row(chunk_job *job, size_t row, int st) {
    job->counts[st]++;
    if (job->samples < job->sample_cap) {
        job->sample_index[job->samples] = (int64_t)row;
        job->sample_reason[job->samples] = (uint8_t)st;
        job->samples++;
    }
}

/* One line [start, end) of data: its status, and its digest in the next slot when valid. */
static void one_line(chunk_job *job, size_t row, size_t start, size_t end) {
    const uint8_t *s = job->data + start;
    size_t n = end - start;
    while (n && is_trim(s[0])) s++, n--;
    while (n && is_trim(s[n - 1])) n--;
    int st;
    uint8_t *slot = job->digests + job->slots * job->dsize;
    uint8_t small[64];
    size_t out_len = 0;
    if (n == 0) {
        st = ST_EMPTY;
    } else {
        switch (job->kind) {
        case K_MAID:
            st = rule_maid(s, n, small);
            if (st == ST_VALID) digest_into(job, small, 36, slot);
            break;
        case K_SHA256:
            st = rule_hashed(s, n, 64, slot);
            break;
        case K_MD5:
            st = rule_hashed(s, n, 32, slot);
            break;
        case K_PHONE: {
            int national = 0;
            st = rule_phone(s, n, job->flags, small, &out_len, &national);
            job->national += national;
            if (st == ST_VALID) digest_into(job, small, out_len, slot);
            break;
        }
        default: /* K_EMAIL */
            if (!grow_scratch(job, n)) {
                job->no_memory = 1;
                return;
            }
            st = rule_email(s, n, job->scratch, &out_len);
            if (st == ST_VALID) digest_into(job, job->scratch, out_len, slot);
            break;
        }
    }
    if (st == ST_VALID) {
        job->slots++;
        return;
    }
    if (st == ST_DEFER) {
        if (job->n_deferred == job->deferred_cap) {
            size_t cap = job->deferred_cap ? 2 * job->deferred_cap : 64;
            deferred_line *p = realloc(job->deferred, cap * sizeof *p);
            if (!p) {
                job->no_memory = 1;
                return;
            }
            job->deferred = p;
            job->deferred_cap = cap;
        }
        deferred_line *d = &job->deferred[job->n_deferred++];
        d->index = (int64_t)row;
        d->slot = (int64_t)job->slots;
        d->start = (int64_t)start;
        d->end = (int64_t)end;
        memset(slot, 0, job->dsize);
        job->slots++;
        return;
    }
    reject_row(job, row, st);
}

static inline size_t arrow_offset(const chunk_job *job, size_t r) {
    if (job->wide) return (size_t)((const int64_t *)job->offsets)[job->first + r];
    return (size_t)((const int32_t *)job->offsets)[job->first + r];
}

static void run_job(chunk_job *job) {
#ifdef ASYNCSYNC_X86
    job->pair = sha256_blocks == sha256_blocks_shani;
#endif
    if (job->bounds) {
        for (size_t r = 0; r < job->rows && !job->no_memory; r++)
            one_line(job, r, (size_t)job->bounds[2 * r], (size_t)job->bounds[2 * r + 1]);
    } else if (job->offsets) {
        /* One memchr over all the values; each row is searched only when it finds a '\n'. */
        size_t lo = arrow_offset(job, 0), hi = arrow_offset(job, job->rows);
        int any_nl = hi > lo && memchr(job->data + lo, '\n', hi - lo) != NULL;
        for (size_t r = 0; r < job->rows && !job->no_memory; r++) {
            size_t start = arrow_offset(job, r), end = arrow_offset(job, r + 1);
            size_t bit = job->first + r;
            if (job->validity && !((job->validity[bit >> 3] >> (bit & 7)) & 1)) {
                one_line(job, r, start, start); /* a null: an empty line */
            } else if (any_nl && end > start && memchr(job->data + start, '\n', end - start)) {
                reject_row(job, r, ST_MALFORMED); /* as text it would be two lines */
            } else {
                one_line(job, r, start, end);
            }
        }
    } else {
        size_t pos = 0, row = 0;
        while (pos < job->len && !job->no_memory) {
            const uint8_t *nl = memchr(job->data + pos, '\n', job->len - pos);
            size_t end = nl ? (size_t)(nl - job->data) : job->len;
            one_line(job, row++, pos, end);
            pos = end + 1;
        }
    }
    flush_held(job);
}

static size_t count_rows(const uint8_t *data, size_t len) {
    size_t rows = 0, pos = 0;
    while (pos < len) {
        const uint8_t *nl = memchr(data + pos, '\n', len - pos);
        rows++;
        if (!nl) break;
        pos = (size_t)(nl - data) + 1;
    }
    return rows;
}

/* Hash the rows ``job`` describes (its data, kind, algo, flags and rows set) into the tuple
 * hash_lines() returns; frees what the job allocated. */
static PyObject *hash_job_rows(chunk_job *job, Py_ssize_t sample_cap) {
    PyObject *result = NULL, *digests = NULL, *sample = NULL, *deferred = NULL;
    job->dsize = job->kind == K_SHA256 ? 32
                 : job->kind == K_MD5  ? 16
                 : job->algo == A_MD5  ? 16
                                       : 32;
    job->sample_cap = (size_t)sample_cap < job->rows ? (size_t)sample_cap : job->rows;
    digests = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)(job->rows * job->dsize));
    if (!digests) goto done;
    job->digests = (uint8_t *)PyBytes_AS_STRING(digests);
    job->sample_index = PyMem_RawMalloc(job->sample_cap * sizeof(int64_t) + 1);
    job->sample_reason = PyMem_RawMalloc(job->sample_cap + 1);
    if (!job->sample_index || !job->sample_reason) {
        PyErr_NoMemory();
        goto done;
    }
    Py_BEGIN_ALLOW_THREADS
    run_job(job);
    Py_END_ALLOW_THREADS
    if (job->no_memory) {
        PyErr_NoMemory();
        goto done;
    }
    if (_PyBytes_Resize(&digests, (Py_ssize_t)(job->slots * job->dsize)) < 0) goto done;
    sample = PyList_New((Py_ssize_t)job->samples);
    if (!sample) goto done;
    for (size_t i = 0; i < job->samples; i++) {
        PyObject *t = Py_BuildValue("(Li)", (long long)job->sample_index[i], job->sample_reason[i]);
        if (!t) goto done;
        PyList_SET_ITEM(sample, (Py_ssize_t)i, t);
    }
    deferred = PyList_New((Py_ssize_t)job->n_deferred);
    if (!deferred) goto done;
    for (size_t i = 0; i < job->n_deferred; i++) {
        deferred_line *d = &job->deferred[i];
        PyObject *t = Py_BuildValue("(LLLL)", (long long)d->index, (long long)d->slot,
                                    (long long)d->start, (long long)d->end);
        if (!t) goto done;
        PyList_SET_ITEM(deferred, (Py_ssize_t)i, t);
    }
    result = Py_BuildValue("(On(nnn)OOn)", digests, (Py_ssize_t)job->rows, job->counts[ST_EMPTY],
                           job->counts[ST_MALFORMED], job->counts[ST_ZERO_ID], sample, deferred,
                           job->national);
done:
    Py_XDECREF(digests);
    Py_XDECREF(sample);
    Py_XDECREF(deferred);
    PyMem_RawFree(job->sample_index);
    PyMem_RawFree(job->sample_reason);
    free(job->deferred);
    free(job->scratch);
    return result;
}

static int check_kind(int kind, int algo, Py_ssize_t sample_cap) {
    if (kind < K_MAID || kind > K_MD5 || (algo != A_SHA256 && algo != A_MD5) || sample_cap < 0) {
        PyErr_SetString(PyExc_ValueError, "bad kind, algo or sample_cap");
        return 0;
    }
    return 1;
}

static PyObject *hash_lines(PyObject *self, PyObject *args, PyObject *kwargs) {
    static char *names[] = {"data", "kind", "algo", "flags", "sample_cap", "bounds", NULL};
    Py_buffer data = {0}, bounds = {0};
    PyObject *bounds_obj = Py_None, *result = NULL;
    int kind, algo;
    unsigned int flags;
    Py_ssize_t sample_cap;
    chunk_job job;
    memset(&job, 0, sizeof job);
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "y*iiIn|O", names, &data, &kind, &algo,
                                     &flags, &sample_cap, &bounds_obj))
        return NULL;
    if (!check_kind(kind, algo, sample_cap)) goto done;
    job.data = data.buf;
    job.len = (size_t)data.len;
    job.kind = kind;
    job.algo = algo;
    job.flags = flags;
    if (bounds_obj != Py_None) {
        if (PyObject_GetBuffer(bounds_obj, &bounds, PyBUF_SIMPLE) < 0) goto done;
        if (bounds.len % 16) {
            PyErr_SetString(PyExc_ValueError, "bounds: pairs of int64 expected");
            goto done;
        }
        job.rows = (size_t)bounds.len / 16;
        job.bounds = bounds.buf;
        for (size_t r = 0; r < job.rows; r++) {
            int64_t a = job.bounds[2 * r], b = job.bounds[2 * r + 1];
            if (a < 0 || b < a || (size_t)b > job.len) {
                PyErr_SetString(PyExc_ValueError, "bounds: a row outside the data");
                goto done;
            }
        }
    } else {
        job.rows = count_rows(job.data, job.len);
    }
    result = hash_job_rows(&job, sample_cap);
done:
    PyBuffer_Release(&data);
    if (bounds.obj) PyBuffer_Release(&bounds);
    return result;
}

/* hash_arrow(data, offsets, wide, first, rows, validity, kind, algo, flags, sample_cap): the
 * values first .. first + rows - 1 of an Arrow binary array (value buffer, offsets buffer of
 * int32, or int64 when ``wide``, validity bitmap or None), each one row: a null is an empty
 * row, a value holding '\n' a malformed one (as text it would be two lines). */
static PyObject *hash_arrow(PyObject *self, PyObject *args, PyObject *kwargs) {
    static char *names[] = {"data", "offsets", "wide", "first", "rows", "validity", "kind",
                            "algo", "flags", "sample_cap", NULL};
    Py_buffer data = {0}, offsets = {0}, validity = {0};
    PyObject *validity_obj = Py_None, *result = NULL;
    int wide, kind, algo;
    unsigned int flags;
    Py_ssize_t first, rows, sample_cap;
    chunk_job job;
    memset(&job, 0, sizeof job);
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "y*y*pnnOiiIn", names, &data, &offsets, &wide,
                                     &first, &rows, &validity_obj, &kind, &algo, &flags,
                                     &sample_cap))
        return NULL;
    if (!check_kind(kind, algo, sample_cap)) goto done;
    size_t width = wide ? 8 : 4;
    if (first < 0 || rows < 0 || (size_t)offsets.len / width < (size_t)first + (size_t)rows + 1) {
        PyErr_SetString(PyExc_ValueError, "offsets: fewer than first + rows + 1 entries");
        goto done;
    }
    job.data = data.buf;
    job.len = (size_t)data.len;
    job.offsets = offsets.buf;
    job.wide = wide;
    job.first = (size_t)first;
    job.rows = (size_t)rows;
    job.kind = kind;
    job.algo = algo;
    job.flags = flags;
    if (validity_obj != Py_None) {
        if (PyObject_GetBuffer(validity_obj, &validity, PyBUF_SIMPLE) < 0) goto done;
        if ((size_t)validity.len < (job.first + job.rows + 7) / 8) {
            PyErr_SetString(PyExc_ValueError, "validity: fewer bits than first + rows");
            goto done;
        }
        job.validity = validity.buf;
    }
    /* The loop runs without the GIL: every row must lie inside the data. */
    for (size_t r = 0; r <= job.rows; r++) {
        int64_t at = wide ? ((const int64_t *)job.offsets)[job.first + r]
                          : ((const int32_t *)job.offsets)[job.first + r];
        int64_t before = r == 0 ? 0
                         : wide ? ((const int64_t *)job.offsets)[job.first + r - 1]
                                : ((const int32_t *)job.offsets)[job.first + r - 1];
        if (at < before || (size_t)at > job.len) {
            PyErr_SetString(PyExc_ValueError, "offsets: a row outside the data");
            goto done;
        }
    }
    result = hash_job_rows(&job, sample_cap);
done:
    PyBuffer_Release(&data);
    PyBuffer_Release(&offsets);
    if (validity.obj) PyBuffer_Release(&validity);
    return result;
}

static const char hex_digits[] = "0123456789abcdef";
static uint8_t hex_pairs[256][2]; /* byte -> its two lowercase hex digits */

/* Every ``size``-byte digest of ``raw`` as a line of lowercase hex and '\n'. */
static PyObject *hex_lines(PyObject *self, PyObject *args) {
    Py_buffer raw;
    Py_ssize_t size;
    if (!PyArg_ParseTuple(args, "y*n", &raw, &size)) return NULL;
    if (size <= 0 || raw.len % size) {
        PyBuffer_Release(&raw);
        PyErr_SetString(PyExc_ValueError, "raw: a whole number of digests expected");
        return NULL;
    }
    Py_ssize_t rows = raw.len / size;
    PyObject *out = PyBytes_FromStringAndSize(NULL, rows * (2 * size + 1));
    if (out) {
        const uint8_t *src = raw.buf;
        uint8_t *dst = (uint8_t *)PyBytes_AS_STRING(out);
        Py_BEGIN_ALLOW_THREADS
        for (Py_ssize_t r = 0; r < rows; r++) {
            for (Py_ssize_t i = 0; i < size; i++, dst += 2) memcpy(dst, hex_pairs[*src++], 2);
            *dst++ = '\n';
        }
        Py_END_ALLOW_THREADS
    }
    PyBuffer_Release(&raw);
    return out;
}

/* Stable counting sort of ``size``-byte digests by their leading ``bits`` bits (the spill
 * layout of asyncsync/pipeline/dedupe.py): returns (rows bucket after bucket, int32 counts). */
static PyObject *bucket_digests(PyObject *self, PyObject *args) {
    Py_buffer raw;
    Py_ssize_t size;
    int bits;
    if (!PyArg_ParseTuple(args, "y*ni", &raw, &size, &bits)) return NULL;
    PyObject *rows_out = NULL, *counts_out = NULL, *result = NULL;
    if (size < 2 || raw.len % size || bits < 1 || bits > 16) {
        PyErr_SetString(PyExc_ValueError, "bad size or bits");
        goto done;
    }
    size_t n = (size_t)(raw.len / size), nb = (size_t)1 << bits;
    rows_out = PyBytes_FromStringAndSize(NULL, raw.len);
    counts_out = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)(nb * sizeof(int32_t)));
    size_t *next = PyMem_RawCalloc(nb, sizeof(size_t));
    if (!rows_out || !counts_out || !next) {
        PyMem_RawFree(next);
        if (!PyErr_Occurred()) PyErr_NoMemory();
        goto done;
    }
    const uint8_t *src = raw.buf;
    uint8_t *dst = (uint8_t *)PyBytes_AS_STRING(rows_out);
    int32_t *counts = (int32_t *)PyBytes_AS_STRING(counts_out);
    unsigned shift = (unsigned)(16 - bits);
    Py_BEGIN_ALLOW_THREADS
    for (size_t i = 0; i < n; i++) {
        const uint8_t *row = src + i * (size_t)size;
        next[(((unsigned)row[0] << 8) | row[1]) >> shift]++;
    }
    size_t at = 0;
    for (size_t b = 0; b < nb; b++) {
        size_t c = next[b];
        counts[b] = (int32_t)c;
        next[b] = at;
        at += c;
    }
    for (size_t i = 0; i < n; i++) {
        const uint8_t *row = src + i * (size_t)size;
        size_t b = (((unsigned)row[0] << 8) | row[1]) >> shift;
        memcpy(dst + next[b]++ * (size_t)size, row, (size_t)size);
    }
    Py_END_ALLOW_THREADS
    PyMem_RawFree(next);
    result = PyTuple_Pack(2, rows_out, counts_out);
done:
    Py_XDECREF(rows_out);
    Py_XDECREF(counts_out);
    PyBuffer_Release(&raw);
    return result;
}

static void swap_rows(uint8_t *a, uint8_t *b, size_t size) {
    uint8_t t[64];
    memcpy(t, a, size);
    memcpy(a, b, size);
    memcpy(b, t, size);
}

/* Heapsort: O(m log m) whatever the input (a bucket that drew many rows: skewed hashed input). */
static void heap_sort_rows(uint8_t *base, size_t m, size_t size) {
    for (size_t k = m / 2; k-- > 0;) {
        for (size_t r = k;;) {
            size_t c = 2 * r + 1;
            if (c >= m) break;
            if (c + 1 < m && memcmp(base + c * size, base + (c + 1) * size, size) < 0) c++;
            if (memcmp(base + r * size, base + c * size, size) >= 0) break;
            swap_rows(base + r * size, base + c * size, size);
            r = c;
        }
    }
    for (size_t end = m; end-- > 1;) {
        swap_rows(base, base + end * size, size);
        for (size_t r = 0;;) {
            size_t c = 2 * r + 1;
            if (c >= end) break;
            if (c + 1 < end && memcmp(base + c * size, base + (c + 1) * size, size) < 0) c++;
            if (memcmp(base + r * size, base + c * size, size) >= 0) break;
            swap_rows(base + r * size, base + c * size, size);
            r = c;
        }
    }
}

static inline uint64_t load_be64(const uint8_t *p) {
    return ((uint64_t)load_be32(p) << 32) | load_be32(p + 4);
}

static void sort_small_buckets(uint8_t *rows, const size_t *ends, size_t nb, size_t size) {
    size_t first = 0;
    uint8_t hold[64];
    for (size_t b = 0; b < nb; b++) {
        size_t end = ends[b], m = end - first;
        uint8_t *base = rows + first * size;
        if (m > 32) {
            heap_sort_rows(base, m, size);
        } else {
            for (size_t i = 1; i < m; i++) {
                size_t j = i;
                if (memcmp(base + (j - 1) * size, base + j * size, size) <= 0) continue;
                memcpy(hold, base + i * size, size);
                while (j > 0 && memcmp(base + (j - 1) * size, hold, size) > 0) {
                    memcpy(base + j * size, base + (j - 1) * size, size);
                    j--;
                }
                memcpy(base + j * size, hold, size);
            }
        }
        first = end;
    }
}

/* Distribute ``n`` rows of ``src`` into ``dst`` by their leading 8 bytes: 2**log_b buckets
 * (or fewer) over the range of those keys, in key order; ``ends`` gets each bucket's end.
 * Returns the number of buckets, 0 when out of memory (``*ends`` is then NULL). */
static size_t distribute(const uint8_t *src, uint8_t *dst, size_t n, size_t size, unsigned log_b,
                         size_t **ends) {
    uint64_t lo = UINT64_MAX, hi = 0;
    for (size_t i = 0; i < n; i++) {
        uint64_t k = load_be64(src + i * size);
        if (k < lo) lo = k;
        if (k > hi) hi = k;
    }
    unsigned span = 0;
    while (span < 64 && ((hi - lo) >> span)) span++;
    if (log_b > span) log_b = span;
    unsigned shift = span - log_b;
    size_t nb = (size_t)1 << log_b;
    size_t *start = calloc(nb + 1, sizeof(size_t));
    *ends = start;
    if (!start) return 0;
    for (size_t i = 0; i < n; i++) start[((load_be64(src + i * size) - lo) >> shift) + 1]++;
    for (size_t b = 0; b < nb; b++) start[b + 1] += start[b];
    for (size_t i = 0; i < n; i++) {
        size_t b = (size_t)((load_be64(src + i * size) - lo) >> shift);
        memcpy(dst + start[b]++ * size, src + i * size, size);
    }
    return nb; /* start[b] is now the end of bucket b */
}

static unsigned log2_ceil(size_t n) {
    unsigned l = 0;
    while (l < 22 && ((size_t)1 << l) < n) l++;
    return l;
}

/* Sort ``n`` rows of ``size`` bytes bytewise and drop repeated rows, in place; returns the
 * number of unique rows, or (size_t)-1 when out of memory. Two distribution passes on the
 * leading 8 bytes (2048 ranges, then about one bucket per row within each range, so that the
 * second pass works in cache), then insertion sort within buckets (heapsort for a bucket that
 * drew many rows: skewed already-hashed input), then one pass dropping repeats. */
static size_t sort_unique_rows(uint8_t *rows, size_t n, size_t size) {
    if (n < 2) return n;
    uint8_t *tmp = malloc(n * size);
    if (!tmp) return (size_t)-1;
    size_t *outer = NULL;
    size_t n_outer = distribute(rows, tmp, n, size, 11, &outer);
    if (!outer) {
        free(tmp);
        return (size_t)-1;
    }
    size_t first = 0;
    for (size_t r = 0; r < n_outer; r++) {
        size_t m = outer[r] - first;
        if (m > 1) {
            size_t *inner = NULL;
            size_t n_inner = distribute(tmp + first * size, rows + first * size, m, size,
                                        log2_ceil(m), &inner);
            if (!inner) {
                free(outer);
                free(tmp);
                return (size_t)-1;
            }
            sort_small_buckets(rows + first * size, inner, n_inner, size);
            free(inner);
        } else if (m == 1) {
            memcpy(rows + first * size, tmp + first * size, size);
        }
        first = outer[r];
    }
    free(outer);
    free(tmp);
    size_t kept = 1;
    for (size_t i = 1; i < n; i++) {
        const uint8_t *row = rows + i * size;
        if (memcmp(rows + (kept - 1) * size, row, size) == 0) continue;
        if (kept != i) memcpy(rows + kept * size, row, size);
        kept++;
    }
    return kept;
}

/* sort_unique(buffer, size) -> rows kept: the writable buffer's first rows are then its
 * distinct rows in bytewise order. */
static PyObject *sort_unique(PyObject *self, PyObject *args) {
    Py_buffer buf;
    Py_ssize_t size;
    if (!PyArg_ParseTuple(args, "w*n", &buf, &size)) return NULL;
    if (size < 8 || size > 64 || buf.len % size) {
        PyBuffer_Release(&buf);
        PyErr_SetString(PyExc_ValueError, "rows of 8 to 64 bytes expected");
        return NULL;
    }
    size_t kept;
    Py_BEGIN_ALLOW_THREADS
    kept = sort_unique_rows(buf.buf, (size_t)(buf.len / size), (size_t)size);
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&buf);
    if (kept == (size_t)-1) return PyErr_NoMemory();
    return PyLong_FromSize_t(kept);
}

/* MD5 of several messages fed in turn (the part files one worker writes together): a bytearray
 * of ``n`` MD5 contexts, fed by md5_lanes_update, read by md5_lanes_hexdigest. */
static int cpu_avx2 = 0;  /* the CPU has AVX2 */
static int have_avx2 = 0; /* ... and the lanes use it */

static PyObject *md5_lanes(PyObject *self, PyObject *args) {
    Py_ssize_t n;
    if (!PyArg_ParseTuple(args, "n", &n)) return NULL;
    if (n < 1 || n > 8) {
        PyErr_SetString(PyExc_ValueError, "md5_lanes: 1 to 8 lanes");
        return NULL;
    }
    PyObject *states = PyByteArray_FromStringAndSize(NULL, n * (Py_ssize_t)sizeof(md5_ctx));
    if (!states) return NULL;
    md5_ctx *ctx = (md5_ctx *)PyByteArray_AS_STRING(states);
    for (Py_ssize_t l = 0; l < n; l++) {
        memset(&ctx[l], 0, sizeof ctx[l]);
        md5_init(&ctx[l]);
    }
    return states;
}

/* The contexts of ``len`` bytes of states at ``buf`` (NULL and an exception unless 1 to 8). */
static md5_ctx *lane_states(void *buf, Py_ssize_t len, Py_ssize_t *n) {
    *n = len / (Py_ssize_t)sizeof(md5_ctx);
    if (len % (Py_ssize_t)sizeof(md5_ctx) || *n < 1 || *n > 8) {
        PyErr_SetString(PyExc_TypeError, "states: a bytearray made by md5_lanes expected");
        return NULL;
    }
    return (md5_ctx *)buf;
}

/* md5_lanes_update(states, bufs): lane l is fed bufs[l] (one buffer per lane, may be empty). */
static PyObject *md5_lanes_update_py(PyObject *self, PyObject *args) {
    PyObject *states, *bufs;
    if (!PyArg_ParseTuple(args, "YO", &states, &bufs)) return NULL;
    Py_buffer held; /* an export keeps the bytearray from being resized until the end */
    if (PyObject_GetBuffer(states, &held, PyBUF_WRITABLE) < 0) return NULL;
    Py_ssize_t n;
    md5_ctx *ctx = lane_states(held.buf, held.len, &n);
    PyObject *seq = ctx ? PySequence_Fast(bufs, "bufs: a sequence of buffers expected") : NULL;
    if (!seq) {
        PyBuffer_Release(&held);
        return NULL;
    }
    if (PySequence_Fast_GET_SIZE(seq) != n) {
        Py_DECREF(seq);
        PyBuffer_Release(&held);
        PyErr_SetString(PyExc_ValueError, "bufs: one buffer per lane expected");
        return NULL;
    }
    Py_buffer views[8];
    const uint8_t *data[8];
    size_t len[8];
    Py_ssize_t got = 0;
    for (; got < n; got++) {
        if (PyObject_GetBuffer(PySequence_Fast_GET_ITEM(seq, got), &views[got], PyBUF_SIMPLE) < 0)
            break;
        data[got] = views[got].buf;
        len[got] = (size_t)views[got].len;
    }
    if (got == n) {
        Py_BEGIN_ALLOW_THREADS
        md5_lanes_update(ctx, (int)n, data, len, have_avx2);
        Py_END_ALLOW_THREADS
    }
    for (Py_ssize_t l = 0; l < got; l++) PyBuffer_Release(&views[l]);
    PyBuffer_Release(&held);
    Py_DECREF(seq);
    if (got != n) return NULL;
    Py_RETURN_NONE;
}

/* md5_lanes_hexdigest(states, lane) -> the lowercase hex MD5 of what the lane was fed. */
static PyObject *md5_lanes_hexdigest(PyObject *self, PyObject *args) {
    PyObject *states;
    Py_ssize_t lane, n;
    if (!PyArg_ParseTuple(args, "Yn", &states, &lane)) return NULL;
    md5_ctx *ctx =
        lane_states(PyByteArray_AS_STRING(states), PyByteArray_GET_SIZE(states), &n);
    if (!ctx) return NULL;
    if (lane < 0 || lane >= n) {
        PyErr_SetString(PyExc_IndexError, "lane out of range");
        return NULL;
    }
    md5_ctx done = ctx[lane];
    uint8_t out[16];
    char hex[32];
    md5_final(&done, out);
    for (int i = 0; i < 16; i++) {
        hex[2 * i] = hex_digits[out[i] >> 4];
        hex[2 * i + 1] = hex_digits[out[i] & 15];
    }
    return PyUnicode_FromStringAndSize(hex, 32);
}

/* md5_lanes_simd([use]) -> whether md5_lanes_update hashes lanes side by side (AVX2); ``use``
 * turns that off or (where the CPU has AVX2) on, for tests of both paths. */
static PyObject *md5_lanes_simd(PyObject *self, PyObject *args) {
    int use = -1;
    if (!PyArg_ParseTuple(args, "|p", &use)) return NULL;
    if (use >= 0) have_avx2 = use && cpu_avx2;
    return PyBool_FromLong(have_avx2);
}

/* The primitives alone, for tests against hashlib. */
static PyObject *digest(PyObject *self, PyObject *args) {
    Py_buffer msg;
    int algo;
    if (!PyArg_ParseTuple(args, "y*i", &msg, &algo)) return NULL;
    uint8_t out[32];
    if (algo == A_MD5)
        md5_digest(msg.buf, (size_t)msg.len, out);
    else
        sha256_digest(sha256_blocks, msg.buf, (size_t)msg.len, out);
    PyBuffer_Release(&msg);
    return PyBytes_FromStringAndSize((const char *)out, algo == A_MD5 ? 16 : 32);
}

static PyObject *sha256_impl(PyObject *self, PyObject *args) {
    const char *want = NULL;
    if (!PyArg_ParseTuple(args, "|z", &want)) return NULL;
    if (want) {
        if (strcmp(want, "portable") == 0) {
            sha256_blocks = sha256_blocks_portable;
#ifdef ASYNCSYNC_X86
        } else if (strcmp(want, "sha-ni") == 0 && have_shani) {
            sha256_blocks = sha256_blocks_shani;
#endif
        } else {
            PyErr_Format(PyExc_ValueError, "SHA-256 implementation %s is not available", want);
            return NULL;
        }
    }
#ifdef ASYNCSYNC_X86
    if (sha256_blocks == sha256_blocks_shani) return PyUnicode_FromString("sha-ni");
#endif
    return PyUnicode_FromString("portable");
}

static PyMethodDef methods[] = {
    {"hash_lines", (PyCFunction)(void (*)(void))hash_lines, METH_VARARGS | METH_KEYWORDS,
     "hash_lines(data, kind, algo, flags, sample_cap, bounds=None) -> (digests, rows, "
     "(empty, malformed, zero_id), [(row, reason)], [(row, slot, start, end)])"},
    {"hash_arrow", (PyCFunction)(void (*)(void))hash_arrow, METH_VARARGS | METH_KEYWORDS,
     "hash_arrow(data, offsets, wide, first, rows, validity, kind, algo, flags, sample_cap) -> "
     "as hash_lines, one row per value of an Arrow binary array"},
    {"hex_lines", hex_lines, METH_VARARGS, "hex_lines(raw, size) -> hex lines"},
    {"bucket_digests", bucket_digests, METH_VARARGS,
     "bucket_digests(raw, size, bits) -> (rows by bucket, int32 counts)"},
    {"sort_unique", sort_unique, METH_VARARGS,
     "sort_unique(buffer, size) -> rows kept (sorted, distinct) at the buffer's start"},
    {"md5_lanes", md5_lanes, METH_VARARGS, "md5_lanes(n) -> states of n fresh MD5 contexts"},
    {"md5_lanes_update", md5_lanes_update_py, METH_VARARGS,
     "md5_lanes_update(states, bufs) -> None: lane l is fed bufs[l]"},
    {"md5_lanes_hexdigest", md5_lanes_hexdigest, METH_VARARGS,
     "md5_lanes_hexdigest(states, lane) -> hex MD5 of what the lane was fed"},
    {"md5_lanes_simd", md5_lanes_simd, METH_VARARGS,
     "md5_lanes_simd([use]) -> whether the lanes are hashed side by side (AVX2); use sets it"},
    {"digest", digest, METH_VARARGS, "digest(msg, algo) -> SHA-256 (0) or MD5 (1) digest"},
    {"sha256_impl", sha256_impl, METH_VARARGS,
     "sha256_impl([name]) -> the SHA-256 code in use ('sha-ni' or 'portable'); a name selects it"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_native", "The native hot loop of prepare.", -1, methods,
};

PyMODINIT_FUNC PyInit__native(void) {
    rules_init();
    for (int b = 0; b < 256; b++) {
        hex_pairs[b][0] = (uint8_t)hex_digits[b >> 4];
        hex_pairs[b][1] = (uint8_t)hex_digits[b & 15];
    }
#ifdef ASYNCSYNC_X86
    have_shani = cpu_has_shani();
    if (have_shani) sha256_blocks = sha256_blocks_shani;
#endif
#ifdef ASYNCSYNC_MD5X8
    have_avx2 = cpu_avx2 = cpu_has_avx2();
#endif
    PyObject *m = PyModule_Create(&module);
    /* What the Python side expects of this module (asyncsync/rules/engine.py: NATIVE_ABI). */
    if (m && PyModule_AddIntConstant(m, "ABI", 3) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}

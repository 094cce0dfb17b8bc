/* asyncsync._native: the hot loop of ``prepare`` in C (see asyncsync/rules/hashing.py).
 *
 * hash_lines() takes a whole chunk and, without the GIL, splits it into lines, trims,
 * validates and normalizes each line (rules.h) and writes the binary digest of every valid one
 * (sha256.h, md5.h) into one buffer, in line order. Lines that rules.h hands back (DEFER) get a
 * zeroed slot in that buffer and are returned to Python, which normalizes them with the
 * reference rules and fills or drops their slot. hex_lines() is the part writer's encoder.
 *
 * Needs only a C compiler and Python's headers. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <stdlib.h>

#include "md5.h"
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
    size_t rows;
    int kind, algo;
    unsigned flags;
    size_t sample_cap, dsize;
    uint8_t *digests;
    /* out */
    size_t slots;
    Py_ssize_t counts[4];
    int64_t *sample_index;
    uint8_t *sample_reason;
    size_t samples;
    deferred_line *deferred;
    size_t n_deferred, deferred_cap;
    uint8_t *scratch;
    size_t scratch_cap;
    int no_memory;
} chunk_job;

static inline void digest_into(const chunk_job *job, const uint8_t *msg, size_t n, uint8_t *out) {
    if (job->algo == A_MD5)
        md5_digest(msg, n, out);
    else
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
        case K_PHONE:
            st = rule_phone(s, n, job->flags, small, &out_len);
            if (st == ST_VALID) digest_into(job, small, out_len, slot);
            break;
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
    job->counts[st]++;
    if (job->samples < job->sample_cap) {
        job->sample_index[job->samples] = (int64_t)row;
        job->sample_reason[job->samples] = (uint8_t)st;
        job->samples++;
    }
}

static void run_job(chunk_job *job) {
    if (job->bounds) {
        for (size_t r = 0; r < job->rows && !job->no_memory; r++)
            one_line(job, r, (size_t)job->bounds[2 * r], (size_t)job->bounds[2 * r + 1]);
        return;
    }
    size_t pos = 0, row = 0;
    while (pos < job->len && !job->no_memory) {
        const uint8_t *nl = memchr(job->data + pos, '\n', job->len - pos);
        size_t end = nl ? (size_t)(nl - job->data) : job->len;
        one_line(job, row++, pos, end);
        pos = end + 1;
    }
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

static PyObject *hash_lines(PyObject *self, PyObject *args, PyObject *kwargs) {
    static char *names[] = {"data", "kind", "algo", "flags", "sample_cap", "bounds", NULL};
    Py_buffer data = {0}, bounds = {0};
    PyObject *bounds_obj = Py_None, *result = NULL, *digests = NULL;
    int kind, algo;
    unsigned int flags;
    Py_ssize_t sample_cap;
    chunk_job job;
    memset(&job, 0, sizeof job);
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "y*iiIn|O", names, &data, &kind, &algo,
                                     &flags, &sample_cap, &bounds_obj))
        return NULL;
    if (kind < K_MAID || kind > K_MD5 || (algo != A_SHA256 && algo != A_MD5) || sample_cap < 0) {
        PyErr_SetString(PyExc_ValueError, "bad kind, algo or sample_cap");
        goto done;
    }
    job.data = data.buf;
    job.len = (size_t)data.len;
    job.kind = kind;
    job.algo = algo;
    job.flags = flags;
    job.dsize = kind == K_SHA256 ? 32 : kind == K_MD5 ? 16 : algo == A_MD5 ? 16 : 32;
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
    job.sample_cap = (size_t)sample_cap < job.rows ? (size_t)sample_cap : job.rows;
    digests = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)(job.rows * job.dsize));
    if (!digests) goto done;
    job.digests = (uint8_t *)PyBytes_AS_STRING(digests);
    job.sample_index = PyMem_RawMalloc(job.sample_cap * sizeof(int64_t) + 1);
    job.sample_reason = PyMem_RawMalloc(job.sample_cap + 1);
    if (!job.sample_index || !job.sample_reason) {
        PyErr_NoMemory();
        goto done;
    }
    Py_BEGIN_ALLOW_THREADS
    run_job(&job);
    Py_END_ALLOW_THREADS
    if (job.no_memory) {
        PyErr_NoMemory();
        goto done;
    }
    if (_PyBytes_Resize(&digests, (Py_ssize_t)(job.slots * job.dsize)) < 0) goto done;
    PyObject *sample = PyList_New((Py_ssize_t)job.samples);
    if (!sample) goto done;
    for (size_t i = 0; i < job.samples; i++) {
        PyObject *t = Py_BuildValue("(Li)", (long long)job.sample_index[i], job.sample_reason[i]);
        if (!t) {
            Py_DECREF(sample);
            goto done;
        }
        PyList_SET_ITEM(sample, (Py_ssize_t)i, t);
    }
    PyObject *deferred = PyList_New((Py_ssize_t)job.n_deferred);
    if (!deferred) {
        Py_DECREF(sample);
        goto done;
    }
    for (size_t i = 0; i < job.n_deferred; i++) {
        deferred_line *d = &job.deferred[i];
        PyObject *t = Py_BuildValue("(LLLL)", (long long)d->index, (long long)d->slot,
                                    (long long)d->start, (long long)d->end);
        if (!t) {
            Py_DECREF(sample);
            Py_DECREF(deferred);
            goto done;
        }
        PyList_SET_ITEM(deferred, (Py_ssize_t)i, t);
    }
    result = Py_BuildValue("(On(nnn)NN)", digests, (Py_ssize_t)job.rows, job.counts[ST_EMPTY],
                           job.counts[ST_MALFORMED], job.counts[ST_ZERO_ID], sample, deferred);
done:
    Py_XDECREF(digests);
    PyMem_RawFree(job.sample_index);
    PyMem_RawFree(job.sample_reason);
    free(job.deferred);
    free(job.scratch);
    PyBuffer_Release(&data);
    if (bounds.obj) PyBuffer_Release(&bounds);
    return result;
}

static const char hex_digits[] = "0123456789abcdef";

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
            for (Py_ssize_t i = 0; i < size; i++) {
                uint8_t c = *src++;
                *dst++ = (uint8_t)hex_digits[c >> 4];
                *dst++ = (uint8_t)hex_digits[c & 15];
            }
            *dst++ = '\n';
        }
        Py_END_ALLOW_THREADS
    }
    PyBuffer_Release(&raw);
    return out;
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
    {"hex_lines", hex_lines, METH_VARARGS, "hex_lines(raw, size) -> hex lines"},
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
#ifdef ASYNCSYNC_X86
    have_shani = cpu_has_shani();
    if (have_shani) sha256_blocks = sha256_blocks_shani;
#endif
    return PyModule_Create(&module);
}

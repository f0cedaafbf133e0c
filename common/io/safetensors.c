// safetensors.c: the format is 8 bytes of little-endian header length N, N bytes of JSON
// {"name": {"dtype": "F32", "shape": [..], "data_offsets": [begin, end]}, ...,
//  "__metadata__": {"k": "v"}}, then the data section, which the tensors' byte ranges must tile
// exactly. Everything read from a file is validated before use; a little-endian host is assumed.
#include "io/safetensors.h"

#include <errno.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "check.h"
#include "io/fileio.h"

static const struct {
    const char *name;
    size_t size;
} DTYPES[] = {
    [ST_F32] = {"F32", 4}, [ST_F16] = {"F16", 2}, [ST_BF16] = {"BF16", 2}, [ST_F64] = {"F64", 8},
    [ST_I8] = {"I8", 1},   [ST_U8] = {"U8", 1},   [ST_I16] = {"I16", 2},   [ST_I32] = {"I32", 4},
    [ST_I64] = {"I64", 8}, [ST_BOOL] = {"BOOL", 1},
};
#define N_DTYPES ((int)(sizeof(DTYPES) / sizeof(DTYPES[0])))
#define SUPPORTED "F32 F16 BF16 F64 I8 U8 I16 I32 I64 BOOL"

const char *st_dtype_name(StDtype t) { return (unsigned)t < (unsigned)N_DTYPES ? DTYPES[t].name : "?"; }
size_t st_dtype_size(StDtype t) { return (unsigned)t < (unsigned)N_DTYPES ? DTYPES[t].size : 0; }

static void shape_str(char *buf, size_t n, int ndim, const int64_t *shape) {
    size_t k = (size_t)snprintf(buf, n, "[");
    for (int i = 0; i < ndim && k < n; i++) k += (size_t)snprintf(buf + k, n - k, "%s%lld", i ? ", " : "", (long long)shape[i]);
    if (k < n) snprintf(buf + k, n - k, "]");
}

// ---------------------------------------------------------------- reading

// The 8-byte prefix: header length, checked against the file size.
static int check_prefix(uint64_t *hlen, const unsigned char *prefix, uint64_t size, const char *what, char *err, size_t errlen) {
    if (size < 8) return errf(err, errlen, "%s: %llu bytes is shorter than the 8-byte header length; not a safetensors file", what, (unsigned long long)size);
    uint64_t n = 0;
    for (int i = 7; i >= 0; i--) n = (n << 8) | prefix[i];
    if (n == 0) return errf(err, errlen, "%s: header length is 0; not a safetensors file", what);
    if (n > ST_MAX_HEADER) return errf(err, errlen, "%s: header length %llu exceeds the %u-byte limit; not a safetensors file", what, (unsigned long long)n, ST_MAX_HEADER);
    if (n > size - 8) return errf(err, errlen, "%s: header length %llu runs past the end of the file (%llu bytes); truncated file?", what, (unsigned long long)n, (unsigned long long)size);
    *hlen = n;
    return 0;
}

static int parse_dtype(StDtype *dt, json_t *v, const char *name, const char *what, char *err, size_t errlen) {
    if (!json_is_string(v)) return errf(err, errlen, "%s: tensor '%.200s': \"dtype\" is not a string", what, name);
    for (int i = 0; i < N_DTYPES; i++)
        if (strcmp(json_string_value(v), DTYPES[i].name) == 0) {
            *dt = (StDtype)i;
            return 0;
        }
    return errf(err, errlen, "%s: tensor '%.200s': unknown dtype \"%.40s\" (supported: " SUPPORTED ")", what, name, json_string_value(v));
}

static int parse_shape(StTensor *t, json_t *v, const char *what, char *err, size_t errlen) {
    if (!json_is_array(v)) return errf(err, errlen, "%s: tensor '%.200s': \"shape\" is not an array", what, t->name);
    if (json_array_size(v) > ST_MAX_DIMS)
        return errf(err, errlen, "%s: tensor '%.200s': shape has %zu dims, more than the %d supported", what, t->name, json_array_size(v), ST_MAX_DIMS);
    t->ndim = (int)json_array_size(v);
    size_t numel = 1;
    int overflow = 0;
    for (int i = 0; i < t->ndim; i++) {
        json_t *d = json_array_get(v, (size_t)i);
        if (!json_is_integer(d) || json_integer_value(d) < 0)
            return errf(err, errlen, "%s: tensor '%.200s': shape entry %d is not a non-negative integer", what, t->name, i);
        t->shape[i] = json_integer_value(d);
        overflow |= __builtin_mul_overflow(numel, (uint64_t)t->shape[i], &numel);
    }
    if (overflow) return errf(err, errlen, "%s: tensor '%.200s': shape's element count overflows", what, t->name);
    t->numel = numel;
    return 0;
}

static int parse_offsets(StTensor *t, json_t *v, uint64_t data_size, const char *what, char *err, size_t errlen) {
    json_t *b = json_array_get(v, 0), *e = json_array_get(v, 1);  // NULL when v is not an array
    if (!json_is_array(v) || json_array_size(v) != 2 || !json_is_integer(b) || !json_is_integer(e) ||
        json_integer_value(b) < 0 || json_integer_value(e) < 0)
        return errf(err, errlen, "%s: tensor '%.200s': \"data_offsets\" is not two non-negative integers [begin, end]", what, t->name);
    uint64_t begin = (uint64_t)json_integer_value(b), end = (uint64_t)json_integer_value(e);
    if (begin > end) return errf(err, errlen, "%s: tensor '%.200s': data_offsets [%llu, %llu] has begin > end", what, t->name, (unsigned long long)begin, (unsigned long long)end);
    if (end > data_size)
        return errf(err, errlen, "%s: tensor '%.200s': data_offsets end %llu is beyond the data section (%llu bytes); truncated file?",
                    what, t->name, (unsigned long long)end, (unsigned long long)data_size);
    size_t need;
    char sh[160];
    shape_str(sh, sizeof(sh), t->ndim, t->shape);
    if (__builtin_mul_overflow(t->numel, DTYPES[t->dtype].size, &need))
        return errf(err, errlen, "%s: tensor '%.200s': byte size of shape %s overflows", what, t->name, sh);
    if (need != end - begin)
        return errf(err, errlen, "%s: tensor '%.200s': data_offsets [%llu, %llu] hold %llu bytes but %s x %s needs %zu",
                    what, t->name, (unsigned long long)begin, (unsigned long long)end, (unsigned long long)(end - begin),
                    DTYPES[t->dtype].name, sh, need);
    t->offset = begin;
    t->nbytes = need;
    return 0;
}

static int parse_tensor(StTensor *t, const char *name, json_t *v, uint64_t data_size, const char *what, char *err, size_t errlen) {
    t->name = xstrdup(name);
    if (!json_is_object(v)) return errf(err, errlen, "%s: tensor '%.200s': entry is not a JSON object", what, name);
    static const char *const fields[] = {"dtype", "shape", "data_offsets"};
    for (int i = 0; i < 3; i++)
        if (!json_object_get(v, fields[i])) return errf(err, errlen, "%s: tensor '%.200s': entry has no \"%s\"", what, name, fields[i]);
    if (parse_dtype(&t->dtype, json_object_get(v, "dtype"), name, what, err, errlen)) return -1;
    if (parse_shape(t, json_object_get(v, "shape"), what, err, errlen)) return -1;
    return parse_offsets(t, json_object_get(v, "data_offsets"), data_size, what, err, errlen);
}

static int parse_meta(SafeTensors *st, json_t *v, const char *what, char *err, size_t errlen) {
    if (!json_is_object(v)) return errf(err, errlen, "%s: \"__metadata__\" is not a JSON object", what);
    size_t n = json_object_size(v);
    st->meta_keys = xcalloc(n, sizeof(char *));
    st->meta_vals = xcalloc(n, sizeof(char *));
    const char *k;
    json_t *s;
    json_object_foreach(v, k, s) {
        if (!json_is_string(s)) return errf(err, errlen, "%s: \"__metadata__\" value of '%.200s' is not a string", what, k);
        st->meta_keys[st->meta_count] = xstrdup(k);
        st->meta_vals[st->meta_count++] = xstrdup(json_string_value(s));
    }
    return 0;
}

static int by_offset(const void *a, const void *b) {
    const StTensor *x = *(StTensor *const *)a, *y = *(StTensor *const *)b;
    if (x->offset != y->offset) return x->offset < y->offset ? -1 : 1;
    return x->nbytes < y->nbytes ? -1 : x->nbytes > y->nbytes;
}

// The byte ranges, sorted, must tile [0, data_size) exactly: no overlap, no gap, nothing after.
static int check_tiling(const SafeTensors *st, uint64_t data_size, const char *what, char *err, size_t errlen) {
    StTensor **order = xmalloc((size_t)st->count * sizeof(*order));
    for (int i = 0; i < st->count; i++) order[i] = &st->tensors[i];
    qsort(order, (size_t)st->count, sizeof(*order), by_offset);
    uint64_t cursor = 0;
    const StTensor *prev = NULL;
    int rc = 0;
    for (int i = 0; i < st->count && rc == 0; i++) {
        const StTensor *t = order[i];
        if (t->offset < cursor)
            rc = errf(err, errlen, "%s: tensor '%.200s' (bytes %zu..%zu) overlaps tensor '%.200s' (bytes %zu..%zu)", what,
                      t->name, t->offset, t->offset + t->nbytes, prev->name, prev->offset, prev->offset + prev->nbytes);
        else if (t->offset > cursor)
            rc = errf(err, errlen, "%s: gap in the data section: bytes %llu..%zu belong to no tensor (before tensor '%.200s')", what,
                      (unsigned long long)cursor, t->offset, t->name);
        cursor = t->offset + t->nbytes;
        prev = t;
    }
    free(order);
    if (rc == 0 && cursor != data_size)
        rc = errf(err, errlen, "%s: %llu trailing bytes after the last tensor (data section %llu bytes, tensors end at %llu)", what,
                  (unsigned long long)(data_size - cursor), (unsigned long long)data_size, (unsigned long long)cursor);
    return rc;
}

// Parses json (hlen bytes) as the header of a file whose data section is data_size bytes.
static int parse_header(SafeTensors *st, const char *json, size_t hlen, uint64_t data_size, const char *what, char *err, size_t errlen) {
    json_error_t je;
    json_t *root = json_loadb(json, hlen, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &je);
    if (!root) return errf(err, errlen, "%s: header is not valid JSON: %s (at byte %d of the header)", what, je.text, je.position);
    int rc = 0;
    if (!json_is_object(root)) rc = errf(err, errlen, "%s: header is not a JSON object", what);
    if (rc == 0) st->tensors = xcalloc(json_object_size(root), sizeof(StTensor));
    const char *key;
    json_t *v;
    json_object_foreach(root, key, v) {
        if (rc != 0) break;
        if (strcmp(key, "__metadata__") == 0) {
            rc = parse_meta(st, v, what, err, errlen);
        } else {
            rc = parse_tensor(&st->tensors[st->count], key, v, data_size, what, err, errlen);
            st->count++;  // counted even on failure so st_free frees its name
        }
    }
    json_decref(root);
    if (rc == 0) rc = check_tiling(st, data_size, what, err, errlen);
    return rc;
}

// Takes ownership of buf (size bytes, the whole file).
static int parse_owned(SafeTensors *st, void *buf, size_t size, const char *what, char *err, size_t errlen) {
    memset(st, 0, sizeof(*st));
    uint64_t hlen;
    if (check_prefix(&hlen, buf, size, what, err, errlen) != 0) {
        free(buf);
        return -1;
    }
    st->buf = buf;
    st->size = size;
    st->data_start = 8 + (size_t)hlen;
    if (parse_header(st, (const char *)buf + 8, (size_t)hlen, size - st->data_start, what, err, errlen) != 0) {
        st_free(st);
        return -1;
    }
    for (int i = 0; i < st->count; i++) st->tensors[i].data = (const char *)buf + st->data_start + st->tensors[i].offset;
    return 0;
}

int st_parse(SafeTensors *st, const void *bytes, size_t size, char *err, size_t errlen) {
    void *buf = xmalloc(size);
    if (size) memcpy(buf, bytes, size);
    return parse_owned(st, buf, size, "safetensors buffer", err, errlen);
}

// Reads exactly n bytes at offset off; a short read is an error (the file changed or shrank).
static int read_at(int fd, void *dst, size_t n, size_t off, const char *path, char *err, size_t errlen) {
    char *p = dst;
    while (n > 0) {
        ssize_t r = pread(fd, p, n, (off_t)off);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) return errf(err, errlen, "file %s: read failed at byte %zu: %s", path, off, strerror(errno));
        if (r == 0) return errf(err, errlen, "file %s: unexpected end of file at byte %zu (did it change while being read?)", path, off);
        p += r;
        n -= (size_t)r;
        off += (size_t)r;
    }
    return 0;
}

static FILE *open_regular(const char *path, size_t *size, char *err, size_t errlen) {
    FILE *fp = fopen(path, "rb");
    if (!fp) {
        errf(err, errlen, "file %s: cannot open: %s", path, strerror(errno));
        return NULL;
    }
    struct stat sb;
    const char *bad = fstat(fileno(fp), &sb) != 0 ? strerror(errno)
                      : S_ISDIR(sb.st_mode)        ? "is a folder, not a safetensors file"
                      : !S_ISREG(sb.st_mode)       ? "not a regular file"
                                                   : NULL;
    if (bad) {
        errf(err, errlen, "file %s: %s", path, bad);
        fclose(fp);
        return NULL;
    }
    *size = (size_t)sb.st_size;
    return fp;
}

int st_load(SafeTensors *st, const char *path, char *err, size_t errlen) {
    memset(st, 0, sizeof(*st));
    size_t size;
    FILE *fp = open_regular(path, &size, err, errlen);
    if (!fp) return -1;
    void *buf = malloc(size ? size : 1);
    if (!buf) {
        fclose(fp);
        return errf(err, errlen, "file %s: out of memory reading %zu bytes", path, size);
    }
    int rc = read_at(fileno(fp), buf, size, 0, path, err, errlen);
    fclose(fp);
    if (rc != 0) {
        free(buf);
        return -1;
    }
    size_t n = strlen(path) + 8;
    char *what = xmalloc(n);
    snprintf(what, n, "file %s", path);
    rc = parse_owned(st, buf, size, what, err, errlen);
    free(what);
    return rc;
}

int st_open(SafeTensors *st, const char *path, char *err, size_t errlen) {
    memset(st, 0, sizeof(*st));
    size_t size;
    FILE *fp = open_regular(path, &size, err, errlen);
    if (!fp) return -1;
    size_t n = strlen(path) + 8;
    char *what = xmalloc(n), *json = NULL;
    snprintf(what, n, "file %s", path);
    unsigned char prefix[8];
    uint64_t hlen = 0;
    int rc = size < 8 ? 0 : read_at(fileno(fp), prefix, 8, 0, path, err, errlen);
    if (rc == 0) rc = check_prefix(&hlen, prefix, size, what, err, errlen);
    if (rc == 0) {
        json = xmalloc((size_t)hlen);
        rc = read_at(fileno(fp), json, (size_t)hlen, 8, path, err, errlen);
    }
    if (rc == 0) {
        st->size = size;
        st->data_start = 8 + (size_t)hlen;
        rc = parse_header(st, json, (size_t)hlen, size - st->data_start, what, err, errlen);
    }
    free(json);
    free(what);
    if (rc != 0) {
        fclose(fp);
        st_free(st);
        return -1;
    }
    st->fp = fp;
    st->path = xstrdup(path);
    return 0;
}

int st_read_tensor(const SafeTensors *st, const StTensor *t, void *dst, char *err, size_t errlen) {
    if (t->nbytes == 0) return 0;
    if (t->data) {
        memcpy(dst, t->data, t->nbytes);
        return 0;
    }
    CHECK(st->fp, "st_read_tensor: tensor '%s' has no data and no file is open", t->name);
    return read_at(fileno(st->fp), dst, t->nbytes, st->data_start + t->offset, st->path, err, errlen);
}

void st_free(SafeTensors *st) {
    for (int i = 0; i < st->count; i++) free(st->tensors[i].name);
    for (int i = 0; i < st->meta_count; i++) {
        free(st->meta_keys[i]);
        free(st->meta_vals[i]);
    }
    free(st->tensors);
    free(st->meta_keys);
    free(st->meta_vals);
    free(st->buf);
    free(st->path);
    if (st->fp) fclose(st->fp);
    memset(st, 0, sizeof(*st));
}

const StTensor *st_find(const SafeTensors *st, const char *name) {
    for (int i = 0; i < st->count; i++)
        if (strcmp(st->tensors[i].name, name) == 0) return &st->tensors[i];
    return NULL;
}

const char *st_meta(const SafeTensors *st, const char *key) {
    for (int i = 0; i < st->meta_count; i++)
        if (strcmp(st->meta_keys[i], key) == 0) return st->meta_vals[i];
    return NULL;
}

// ---------------------------------------------------------------- conversion

// IEEE half: 1 sign, 5 exponent (bias 15), 10 mantissa bits.
static float f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16, exp = (h >> 10) & 0x1fu, man = h & 0x3ffu, bits;
    if (exp == 0) {  // zero or subnormal: man * 2^-24, exact in float
        float f = (float)man * 0x1p-24f;
        memcpy(&bits, &f, 4);
        bits |= sign;
    } else if (exp == 31) {  // inf, or nan keeping its payload
        bits = sign | 0x7f800000u | (man << 13);
    } else {
        bits = sign | ((exp + 127 - 15) << 23) | (man << 13);
    }
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

static float bf16_to_f32(uint16_t h) {
    uint32_t bits = (uint32_t)h << 16;
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

// Unaligned little-endian loads (tensor data sits at any byte offset after the header).
#define LOAD(T, p, i) ({ T v_; memcpy(&v_, (const char *)(p) + (i) * sizeof(T), sizeof(T)); v_; })

void st_bytes_to_f32(float *out, const void *p, StDtype dtype, size_t n) {
    switch (dtype) {
    case ST_F32: if (n) memcpy(out, p, n * sizeof(float)); break;
    case ST_F16: for (size_t i = 0; i < n; i++) out[i] = f16_to_f32(LOAD(uint16_t, p, i)); break;
    case ST_BF16: for (size_t i = 0; i < n; i++) out[i] = bf16_to_f32(LOAD(uint16_t, p, i)); break;
    case ST_F64: for (size_t i = 0; i < n; i++) out[i] = (float)LOAD(double, p, i); break;
    case ST_I8: for (size_t i = 0; i < n; i++) out[i] = (float)LOAD(int8_t, p, i); break;
    case ST_U8: for (size_t i = 0; i < n; i++) out[i] = (float)LOAD(uint8_t, p, i); break;
    case ST_I16: for (size_t i = 0; i < n; i++) out[i] = (float)LOAD(int16_t, p, i); break;
    case ST_I32: for (size_t i = 0; i < n; i++) out[i] = (float)LOAD(int32_t, p, i); break;
    case ST_I64: for (size_t i = 0; i < n; i++) out[i] = (float)LOAD(int64_t, p, i); break;
    case ST_BOOL: for (size_t i = 0; i < n; i++) out[i] = LOAD(uint8_t, p, i) ? 1.0f : 0.0f; break;
    default: DIE("st_bytes_to_f32: bad dtype %d", (int)dtype);
    }
}

void st_to_f32(float *out, const StTensor *t) {
    CHECK(t->data || t->numel == 0, "st_to_f32: tensor '%s' has no data in memory (opened with st_open? use st_read_tensor)", t->name);
    st_bytes_to_f32(out, t->data, t->dtype, t->numel);
}

// ---------------------------------------------------------------- writing

static int check_entry(const StEntry *e, size_t *nbytes, const char *path, char *err, size_t errlen) {
    if (!e->name) return errf(err, errlen, "file %s: tensor with no name", path);
    if (strcmp(e->name, "__metadata__") == 0) return errf(err, errlen, "file %s: \"__metadata__\" is reserved, not a tensor name", path);
    if ((unsigned)e->dtype >= (unsigned)N_DTYPES) return errf(err, errlen, "file %s: tensor '%.200s': bad dtype %d", path, e->name, (int)e->dtype);
    if (e->ndim < 0 || e->ndim > ST_MAX_DIMS) return errf(err, errlen, "file %s: tensor '%.200s': %d dims (0..%d allowed)", path, e->name, e->ndim, ST_MAX_DIMS);
    size_t n = DTYPES[e->dtype].size;
    for (int i = 0; i < e->ndim; i++) {
        if (e->shape[i] < 0) return errf(err, errlen, "file %s: tensor '%.200s': negative dim %lld", path, e->name, (long long)e->shape[i]);
        if (__builtin_mul_overflow(n, (uint64_t)e->shape[i], &n)) return errf(err, errlen, "file %s: tensor '%.200s': size overflows", path, e->name);
    }
    if (n && !e->data) return errf(err, errlen, "file %s: tensor '%.200s': no data", path, e->name);
    *nbytes = n;
    return 0;
}

// The JSON header, padded with spaces to a multiple of 8 bytes as the reference writer does, so
// the data section (and every tensor, when sizes allow) starts 8-byte aligned.
static char *build_header(size_t *hlen, const StEntry *entries, int n, const char *const *meta_kv, int n_meta,
                          const char *path, char *err, size_t errlen) {
    json_t *root = json_object();
    int rc = 0;
    if (n_meta > 0) {
        json_t *meta = json_object();
        json_object_set_new(root, "__metadata__", meta);
        for (int i = 0; i < n_meta && rc == 0; i++) {
            if (!meta_kv[2 * i] || !meta_kv[2 * i + 1] || json_object_get(meta, meta_kv[2 * i]))
                rc = errf(err, errlen, "file %s: metadata pair %d is NULL or a duplicate key", path, i);
            else if (json_object_set_new(meta, meta_kv[2 * i], json_string(meta_kv[2 * i + 1])) != 0)
                rc = errf(err, errlen, "file %s: metadata pair %d is not valid UTF-8", path, i);
        }
    }
    size_t offset = 0;
    for (int i = 0; i < n && rc == 0; i++) {
        const StEntry *e = &entries[i];
        size_t nb;
        if ((rc = check_entry(e, &nb, path, err, errlen)) != 0) break;
        if (json_object_get(root, e->name)) {
            rc = errf(err, errlen, "file %s: tensor name '%.200s' appears twice", path, e->name);
            break;
        }
        json_t *shape = json_array();
        for (int d = 0; d < e->ndim; d++) json_array_append_new(shape, json_integer(e->shape[d]));
        json_t *t = json_object();
        json_object_set_new(t, "dtype", json_string(DTYPES[e->dtype].name));
        json_object_set_new(t, "shape", shape);
        json_object_set_new(t, "data_offsets", json_pack("[II]", (json_int_t)offset, (json_int_t)(offset + nb)));
        if (json_object_set_new(root, e->name, t) != 0) rc = errf(err, errlen, "file %s: tensor name '%.200s' is not valid UTF-8", path, e->name);
        offset += nb;
    }
    char *s = rc == 0 ? json_dumps(root, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
    json_decref(root);
    if (!s) {
        if (rc == 0) errf(err, errlen, "file %s: could not encode the header", path);
        return NULL;
    }
    size_t len = strlen(s), padded = (len + 7) & ~(size_t)7;
    char *h = xmalloc(padded);
    memcpy(h, s, len);
    memset(h + len, ' ', padded - len);
    free(s);
    *hlen = padded;
    return h;
}

int st_save(const char *path, const StEntry *entries, int n, const char *const *meta_kv, int n_meta, char *err, size_t errlen) {
    size_t hlen;
    char *header = build_header(&hlen, entries, n, meta_kv, n_meta, path, err, errlen);
    if (!header) return -1;
    unsigned char prefix[8];
    for (int i = 0; i < 8; i++) prefix[i] = (unsigned char)((uint64_t)hlen >> (8 * i));
    AtomicFile af;
    int rc = atomic_open(&af, path, err, errlen);
    if (rc == 0) rc = atomic_write(&af, prefix, 8, err, errlen);
    if (rc == 0) rc = atomic_write(&af, header, hlen, err, errlen);
    for (int i = 0; i < n && rc == 0; i++) {
        size_t nb;
        check_entry(&entries[i], &nb, path, NULL, 0);  // already checked in build_header
        rc = atomic_write(&af, entries[i].data, nb, err, errlen);
    }
    if (rc == 0) rc = atomic_commit(&af, err, errlen);  // a failed write has already aborted
    free(header);
    return rc;
}

// frame.c: protocol-v1 frames (protocol.h) <-> msgpack bytes.
//
// Decoding runs in two passes over the received bytes:
//   1. prescan() walks the raw msgpack without allocating anything: it rejects truncation, the
//      reserved byte 0xc1, a length or element count larger than the bytes that remain, nesting
//      deeper than WIRE_MAX_DEPTH, more than FRAME_MAX_ITEMS entries in all, and trailing bytes.
//      msgpack-c needs this guard: for an array/map it allocates count * sizeof(msgpack_object)
//      in its zone before it has seen a single element (a 5-byte array32 header claiming 2^32-1
//      elements asks for 128 GiB; ASan aborts). Raw types (str/bin/ext) it already checks against
//      the bytes available.
//   2. msgpack_unpack_next() builds the object tree over the caller's buffer: str and bin objects
//      point into it (zero copy), so tensor data stays where zmq put it.
// Then every protocol rule is checked on the tree, each failure with its own message.
#include "wire/frame.h"

#include <msgpack.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "io/safetensors.h"

// all map/array entries in a frame: meta's budget plus the envelope and 16 tensors (~250)
#define FRAME_MAX_ITEMS (WIRE_MAX_META_ITEMS + 1024)

static const char *const kind_names[] = {WIRE_KIND_BATCH, WIRE_KIND_END, WIRE_KIND_ERROR,
                                         WIRE_KIND_REQUEST, WIRE_KIND_REPLY, WIRE_KIND_HELLO};
static const char *const dtype_names[] = {"<f4", "<f2", "|u1", "<i4", "<i8"};
static const size_t dtype_sizes[] = {4, 2, 1, 4, 8};
static const StDtype dtype_st[] = {ST_F32, ST_F16, ST_U8, ST_I32, ST_I64};
#define N_KINDS ((int)(sizeof(kind_names) / sizeof(kind_names[0])))
#define N_DTYPES ((int)(sizeof(dtype_names) / sizeof(dtype_names[0])))

const char *frame_kind_name(FrameKind k) { return (int)k >= 0 && (int)k < N_KINDS ? kind_names[k] : "?"; }
const char *wire_dtype_name(WireDtype t) { return (int)t >= 0 && (int)t < N_DTYPES ? dtype_names[t] : "?"; }
size_t wire_dtype_size(WireDtype t) { return (int)t >= 0 && (int)t < N_DTYPES ? dtype_sizes[t] : 0; }

// element count and byte size of a shape; -1 on a negative dimension or overflow
static int shape_size(const int64_t *shape, int ndim, size_t itemsize, size_t *numel, size_t *nbytes) {
    size_t n = 1;
    for (int d = 0; d < ndim; d++) {
        if (shape[d] < 0) return -1;
        if (__builtin_mul_overflow(n, (size_t)shape[d], &n)) return -1;
    }
    if (__builtin_mul_overflow(n, itemsize, nbytes)) return -1;
    *numel = n;
    return 0;
}

// ---------------------------------------------------------------- building

void frame_init(Frame *f, FrameKind kind, const char *stream, uint64_t seq) {
    if (!stream) stream = "";
    CHECK(strlen(stream) <= WIRE_MAX_NAME, "stream name '%.80s' is %zu bytes, longer than the %d allowed (validate it where it is read)",
          stream, strlen(stream), WIRE_MAX_NAME);
    memset(f, 0, sizeof(*f));
    f->kind = kind;
    memcpy(f->stream, stream, strlen(stream) + 1);
    f->seq = seq;
}

int frame_add_tensor(Frame *f, const char *name, WireDtype dtype, int ndim, const int64_t *shape, const void *data) {
    if (f->n_tensors >= WIRE_MAX_TENSORS || !name || !*name || strlen(name) > WIRE_MAX_NAME) return -1;
    if ((int)dtype < 0 || (int)dtype >= N_DTYPES || ndim < 0 || ndim > WIRE_MAX_DIMS || (ndim > 0 && !shape)) return -1;
    if (frame_tensor(f, name)) return -1;
    WireTensor *t = &f->tensors[f->n_tensors];
    memset(t, 0, sizeof(*t));
    if (shape_size(shape, ndim, dtype_sizes[dtype], &t->numel, &t->nbytes) != 0) return -1;
    if (t->nbytes > 0 && !data) return -1;
    memcpy(t->name, name, strlen(name) + 1);
    t->dtype = dtype;
    t->ndim = ndim;
    for (int d = 0; d < ndim; d++) t->shape[d] = shape[d];
    t->data = data;
    f->n_tensors++;
    return 0;
}

void frame_set_meta(Frame *f, json_t *meta) {
    json_incref(meta);  // first: meta may be the one already set
    if (f->meta) json_decref(f->meta);
    f->meta = meta;
}

const WireTensor *frame_tensor(const Frame *f, const char *name) {
    for (int i = 0; i < f->n_tensors; i++)
        if (strcmp(f->tensors[i].name, name) == 0) return &f->tensors[i];
    return NULL;
}

void frame_release(Frame *f) {
    if (f->meta) json_decref(f->meta);
    f->meta = NULL;
}

void wire_tensor_f32(float *out, const WireTensor *t) {
    if (t->numel) st_bytes_to_f32(out, t->data, dtype_st[t->dtype], t->numel);
}

// ---------------------------------------------------------------- encoding

static int pack_cstr(msgpack_packer *pk, const char *s) {
    size_t n = strlen(s);
    return msgpack_pack_str(pk, n) || msgpack_pack_str_body(pk, s, n);
}

static int pack_bin_key(msgpack_packer *pk, const char *s) {
    size_t n = strlen(s);
    return msgpack_pack_bin(pk, n) || msgpack_pack_bin_body(pk, s, n);
}

// json -> msgpack; depth counts containers from the frame's top map (meta itself is depth 2)
static int pack_json(msgpack_packer *pk, const json_t *j, int depth, size_t *items, char *err, size_t errlen) {
    switch (json_typeof(j)) {
    case JSON_OBJECT:
    case JSON_ARRAY: {
        if (depth > WIRE_MAX_DEPTH) return errf(err, errlen, "frame_encode: meta nests deeper than %d levels (WIRE_MAX_DEPTH)", WIRE_MAX_DEPTH);
        size_t n = json_is_object(j) ? json_object_size(j) : json_array_size(j);
        *items += n;
        if (*items > WIRE_MAX_META_ITEMS) return errf(err, errlen, "frame_encode: meta holds more than %d entries (WIRE_MAX_META_ITEMS)", WIRE_MAX_META_ITEMS);
        if (json_is_array(j)) {
            if (msgpack_pack_array(pk, n)) return -2;
            for (size_t i = 0; i < n; i++) {
                int rc = pack_json(pk, json_array_get(j, i), depth + 1, items, err, errlen);
                if (rc) return rc;
            }
            return 0;
        }
        if (msgpack_pack_map(pk, n)) return -2;
        for (void *it = json_object_iter((json_t *)j); it; it = json_object_iter_next((json_t *)j, it)) {
            size_t kl = json_object_iter_key_len(it);
            if (msgpack_pack_str(pk, kl) || msgpack_pack_str_body(pk, json_object_iter_key(it), kl)) return -2;
            int rc = pack_json(pk, json_object_iter_value(it), depth + 1, items, err, errlen);
            if (rc) return rc;
        }
        return 0;
    }
    case JSON_STRING: {
        size_t n = json_string_length(j);
        return msgpack_pack_str(pk, n) || msgpack_pack_str_body(pk, json_string_value(j), n) ? -2 : 0;
    }
    case JSON_INTEGER: return msgpack_pack_int64(pk, (int64_t)json_integer_value(j)) ? -2 : 0;
    case JSON_REAL: return msgpack_pack_double(pk, json_real_value(j)) ? -2 : 0;
    case JSON_TRUE: return msgpack_pack_true(pk) ? -2 : 0;
    case JSON_FALSE: return msgpack_pack_false(pk) ? -2 : 0;
    case JSON_NULL: return msgpack_pack_nil(pk) ? -2 : 0;
    }
    return errf(err, errlen, "frame_encode: meta holds a JSON value of unknown type");
}

// exactly what msgpack_numpy.encode writes for an ndarray: bin keys nd, type, kind, shape, data
static int pack_tensor(msgpack_packer *pk, const WireTensor *t) {
    if (msgpack_pack_map(pk, 5)) return -2;
    if (pack_bin_key(pk, "nd") || msgpack_pack_true(pk)) return -2;
    if (pack_bin_key(pk, "type") || pack_cstr(pk, dtype_names[t->dtype])) return -2;
    if (pack_bin_key(pk, "kind") || msgpack_pack_bin(pk, 0)) return -2;
    if (pack_bin_key(pk, "shape") || msgpack_pack_array(pk, (size_t)t->ndim)) return -2;
    for (int d = 0; d < t->ndim; d++)
        if (msgpack_pack_int64(pk, t->shape[d])) return -2;
    if (pack_bin_key(pk, "data") || msgpack_pack_bin(pk, t->nbytes)) return -2;
    return t->nbytes && msgpack_pack_bin_body(pk, t->data, t->nbytes) ? -2 : 0;
}

// the frame a caller built must be one frame_decode accepts
static int check_outgoing(const Frame *f, size_t *data_bytes, char *err, size_t errlen) {
    if ((int)f->kind < 0 || (int)f->kind >= N_KINDS) return errf(err, errlen, "frame_encode: kind %d is not a FrameKind", (int)f->kind);
    if (strnlen(f->stream, sizeof(f->stream)) > WIRE_MAX_NAME) return errf(err, errlen, "frame_encode: stream name is not terminated");
    if (f->n_tensors < 0 || f->n_tensors > WIRE_MAX_TENSORS)
        return errf(err, errlen, "frame_encode: n_tensors %d outside 0..%d", f->n_tensors, WIRE_MAX_TENSORS);
    if (f->meta && !json_is_object(f->meta)) return errf(err, errlen, "frame_encode: meta is not a JSON object");
    *data_bytes = 0;
    for (int i = 0; i < f->n_tensors; i++) {
        const WireTensor *t = &f->tensors[i];
        size_t numel, nbytes;
        if ((int)t->dtype < 0 || (int)t->dtype >= N_DTYPES || t->ndim < 0 || t->ndim > WIRE_MAX_DIMS ||
            shape_size(t->shape, t->ndim, dtype_sizes[t->dtype], &numel, &nbytes) != 0 || nbytes != t->nbytes ||
            (nbytes && !t->data))
            return errf(err, errlen, "frame_encode: tensor %d ('%.64s') has a bad dtype, shape or size; build it with frame_add_tensor", i, t->name);
        if (__builtin_add_overflow(*data_bytes, nbytes, data_bytes)) *data_bytes = SIZE_MAX;
    }
    return 0;
}

int frame_encode(const Frame *f, void **out, size_t *len, char *err, size_t errlen) {
    *out = NULL;
    *len = 0;
    size_t data_bytes = 0;
    if (check_outgoing(f, &data_bytes, err, errlen)) return -1;
    if (data_bytes > WIRE_MAX_FRAME_BYTES)
        return errf(err, errlen, "frame_encode: %zu bytes of tensor data exceed the %zu-byte frame limit (WIRE_MAX_FRAME_BYTES); send smaller batches",
                    data_bytes, WIRE_MAX_FRAME_BYTES);
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    sb.alloc = data_bytes + 1024 + (size_t)f->n_tensors * 160;  // one allocation unless meta is large
    sb.data = xmalloc(sb.alloc);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);

    int n_keys = 4 + !!f->has_total + !!f->meta + (f->n_tensors > 0), rc = 0;
    size_t items = 0;
    rc = msgpack_pack_map(&pk, (size_t)n_keys) || pack_cstr(&pk, "v") || msgpack_pack_uint64(&pk, WIRE_VERSION) ||
         pack_cstr(&pk, "kind") || pack_cstr(&pk, kind_names[f->kind]) || pack_cstr(&pk, "stream") ||
         pack_cstr(&pk, f->stream) || pack_cstr(&pk, "seq") || msgpack_pack_uint64(&pk, f->seq) ? -2 : 0;
    if (!rc && f->has_total) rc = pack_cstr(&pk, "total") || msgpack_pack_uint64(&pk, f->total) ? -2 : 0;
    if (!rc && f->meta) rc = pack_cstr(&pk, "meta") ? -2 : pack_json(&pk, f->meta, 2, &items, err, errlen);
    if (!rc && f->n_tensors > 0) {
        rc = pack_cstr(&pk, "tensors") || msgpack_pack_map(&pk, (size_t)f->n_tensors) ? -2 : 0;
        for (int i = 0; !rc && i < f->n_tensors; i++)
            rc = pack_cstr(&pk, f->tensors[i].name) ? -2 : pack_tensor(&pk, &f->tensors[i]);
    }
    if (!rc && sb.size > WIRE_MAX_FRAME_BYTES)
        rc = errf(err, errlen, "frame_encode: the frame is %zu bytes, over the %zu-byte limit (WIRE_MAX_FRAME_BYTES); shrink meta or the batch",
                  sb.size, WIRE_MAX_FRAME_BYTES);
    if (rc == -2) errf(err, errlen, "frame_encode: out of memory packing a %zu-byte frame", sb.size);
    if (rc) {
        msgpack_sbuffer_destroy(&sb);
        return -1;
    }
    *out = sb.data;
    *len = sb.size;
    return 0;
}

// ---------------------------------------------------------------- decoding: the raw pre-scan

static uint64_t be(const uint8_t *p, int n) {
    uint64_t v = 0;
    for (int i = 0; i < n; i++) v = v << 8 | p[i];
    return v;
}

// Walks the first msgpack object in p[0..len) without allocating; *end is where it stops.
static int prescan(const uint8_t *p, size_t len, size_t *end, char *err, size_t errlen) {
    // kind: 0 scalar (fixed payload), 1 str/bin (length), 2 ext (length + type byte), 3 array, 4 map
    static const struct { uint8_t lenbytes, fixed, kind; } t[0x20] = {
        [0x04] = {1, 0, 1}, [0x05] = {2, 0, 1}, [0x06] = {4, 0, 1},  // bin8/16/32
        [0x07] = {1, 0, 2}, [0x08] = {2, 0, 2}, [0x09] = {4, 0, 2},  // ext8/16/32
        [0x0a] = {0, 4, 0}, [0x0b] = {0, 8, 0},                      // float32/64
        [0x0c] = {0, 1, 0}, [0x0d] = {0, 2, 0}, [0x0e] = {0, 4, 0}, [0x0f] = {0, 8, 0},  // uint8..64
        [0x10] = {0, 1, 0}, [0x11] = {0, 2, 0}, [0x12] = {0, 4, 0}, [0x13] = {0, 8, 0},  // int8..64
        [0x14] = {0, 2, 0}, [0x15] = {0, 3, 0}, [0x16] = {0, 5, 0}, [0x17] = {0, 9, 0}, [0x18] = {0, 17, 0},  // fixext
        [0x19] = {1, 0, 1}, [0x1a] = {2, 0, 1}, [0x1b] = {4, 0, 1},  // str8/16/32
        [0x1c] = {2, 0, 3}, [0x1d] = {4, 0, 3}, [0x1e] = {2, 0, 4}, [0x1f] = {4, 0, 4},  // array16/32, map16/32
    };
    uint64_t left[WIRE_MAX_DEPTH + 1];  // objects still due in each open container (a map: 2 per entry)
    int depth = 0;
    size_t off = 0, items = 0;
    for (;;) {
        if (off >= len) return errf(err, errlen, "frame: truncated: the msgpack ends after %zu bytes, inside an unfinished %s", len, depth ? "map/array" : "object");
        const uint8_t b = p[off];
        size_t hdr = 1;           // type byte and length field
        uint64_t body = 0, n = 0; // payload bytes; entries of a container
        int kind = 0;
        if (b == 0xc1) return errf(err, errlen, "frame: reserved byte 0xc1 at offset %zu is not msgpack", off);
        if (b >= 0x80 && b <= 0x8f) kind = 4, n = b & 0x0f;
        else if (b >= 0x90 && b <= 0x9f) kind = 3, n = b & 0x0f;
        else if (b >= 0xa0 && b <= 0xbf) kind = 1, body = b & 0x1f;
        else if (b >= 0xc4 && b <= 0xdf) {
            const int lb = t[b - 0xc0].lenbytes;
            kind = t[b - 0xc0].kind;
            if (len - off < 1u + (size_t)lb) return errf(err, errlen, "frame: truncated: the length field at offset %zu runs past the end", off);
            uint64_t v = be(p + off + 1, lb);
            hdr += (size_t)lb;
            if (kind == 0) body = t[b - 0xc0].fixed;
            else if (kind == 1) body = v;
            else if (kind == 2) body = v + 1;
            else n = v;
        }  // else: fixint, nil, bool: one byte
        const size_t rest = len - off - hdr;
        if (kind >= 3) {
            // every object takes at least one byte, so a count beyond the bytes left is a lie
            const uint64_t objects = kind == 4 ? 2 * n : n;
            if (objects > rest)
                return errf(err, errlen, "frame: %s at offset %zu declares %llu entries but only %zu bytes remain (truncated, or a bogus count)",
                            kind == 4 ? "a map" : "an array",
                            off, (unsigned long long)n, rest);
            if (depth >= WIRE_MAX_DEPTH)
                return errf(err, errlen, "frame: maps/arrays nest deeper than %d levels (WIRE_MAX_DEPTH) at offset %zu", WIRE_MAX_DEPTH, off);
            items += (size_t)n;
            if (items > FRAME_MAX_ITEMS) return errf(err, errlen, "frame: more than %d map/array entries in all", FRAME_MAX_ITEMS);
            off += hdr;
            if (objects > 0) {
                left[++depth] = objects;
                continue;
            }
        } else {
            if (body > rest)
                return errf(err, errlen, "frame: truncated: the %s at offset %zu declares %llu bytes but only %zu remain", kind ? "str/bin/ext" : "number",
                            off, (unsigned long long)body, rest);
            off += hdr + (size_t)body;
        }
        // one object is complete; so is every container it was the last object of
        while (depth > 0 && --left[depth] == 0) depth--;
        if (depth == 0) break;
    }
    *end = off;
    return 0;
}

// ---------------------------------------------------------------- decoding: the protocol rules

static const char *type_name(const msgpack_object *o) {
    switch (o->type) {
    case MSGPACK_OBJECT_NIL: return "nil";
    case MSGPACK_OBJECT_BOOLEAN: return "bool";
    case MSGPACK_OBJECT_POSITIVE_INTEGER: return "uint";
    case MSGPACK_OBJECT_NEGATIVE_INTEGER: return "negative int";
    case MSGPACK_OBJECT_FLOAT32: return "float32";
    case MSGPACK_OBJECT_FLOAT64: return "float64";
    case MSGPACK_OBJECT_STR: return "str";
    case MSGPACK_OBJECT_BIN: return "bin";
    case MSGPACK_OBJECT_ARRAY: return "array";
    case MSGPACK_OBJECT_MAP: return "map";
    case MSGPACK_OBJECT_EXT: return "ext";
    }
    return "?";
}

// untrusted bytes made printable for a message (at most 40 shown)
static const char *show(char out[48], const char *p, size_t n) {
    size_t k = 0;
    for (; k < n && k < 40; k++) out[k] = p[k] >= 0x20 && p[k] < 0x7f ? p[k] : '?';
    if (n > 40) memcpy(out + k, "...", 3), k += 3;
    out[k] = 0;
    return out;
}

// a str or bin object's bytes (tensor keys and a few values come as either)
static int raw_of(const msgpack_object *o, const char **p, size_t *n) {
    if (o->type == MSGPACK_OBJECT_STR) *p = o->via.str.ptr, *n = o->via.str.size;
    else if (o->type == MSGPACK_OBJECT_BIN) *p = o->via.bin.ptr, *n = o->via.bin.size;
    else return -1;
    return 0;
}

static int raw_is(const char *p, size_t n, const char *s) { return n == strlen(s) && memcmp(p, s, n) == 0; }

// a name (stream, tensor): a str of at most WIRE_MAX_NAME bytes without NUL, copied into out
static int take_name(char *out, const msgpack_object *o, const char *what, int allow_empty, char *err, size_t errlen) {
    char s[48];
    if (o->type != MSGPACK_OBJECT_STR) return errf(err, errlen, "frame: %s is a msgpack %s, not a str", what, type_name(o));
    size_t n = o->via.str.size;
    if (n > WIRE_MAX_NAME)
        return errf(err, errlen, "frame: %s is %zu bytes, too long (at most %d): '%s'", what, n, WIRE_MAX_NAME, show(s, o->via.str.ptr, n));
    if (n == 0 && !allow_empty) return errf(err, errlen, "frame: %s is empty", what);
    if (memchr(o->via.str.ptr, 0, n)) return errf(err, errlen, "frame: %s '%s' contains a NUL byte", what, show(s, o->via.str.ptr, n));
    memcpy(out, o->via.str.ptr, n);
    out[n] = 0;
    return 0;
}

// msgpack -> JSON for meta; the pre-scan already bounded the depth
static json_t *meta_json(const msgpack_object *o, size_t *items, char *err, size_t errlen) {
    char s[48];
    switch (o->type) {
    case MSGPACK_OBJECT_NIL: return json_null();
    case MSGPACK_OBJECT_BOOLEAN: return json_boolean(o->via.boolean);
    case MSGPACK_OBJECT_POSITIVE_INTEGER:
        if (o->via.u64 > INT64_MAX) {
            errf(err, errlen, "frame: meta integer %llu does not fit a signed 64-bit integer", (unsigned long long)o->via.u64);
            return NULL;
        }
        return json_integer((json_int_t)o->via.u64);
    case MSGPACK_OBJECT_NEGATIVE_INTEGER: return json_integer((json_int_t)o->via.i64);
    case MSGPACK_OBJECT_FLOAT32:
    case MSGPACK_OBJECT_FLOAT64: {
        json_t *j = json_real(o->via.f64);  // NULL for NaN/Inf, which JSON cannot hold
        if (!j) errf(err, errlen, "frame: meta float %g is not finite", o->via.f64);
        return j;
    }
    case MSGPACK_OBJECT_STR: {
        json_t *j = json_stringn(o->via.str.ptr, o->via.str.size);
        if (!j) errf(err, errlen, "frame: meta string '%s' is not valid UTF-8", show(s, o->via.str.ptr, o->via.str.size));
        return j;
    }
    case MSGPACK_OBJECT_ARRAY:
    case MSGPACK_OBJECT_MAP: break;
    default:
        errf(err, errlen, "frame: meta holds a msgpack %s; only str, int, float, bool, nil, array and map are allowed", type_name(o));
        return NULL;
    }
    const int is_map = o->type == MSGPACK_OBJECT_MAP;
    const size_t n = is_map ? o->via.map.size : o->via.array.size;
    *items += n;
    if (*items > WIRE_MAX_META_ITEMS) {
        errf(err, errlen, "frame: meta holds more than %d map/array entries (WIRE_MAX_META_ITEMS)", WIRE_MAX_META_ITEMS);
        return NULL;
    }
    json_t *out = is_map ? json_object() : json_array();
    for (size_t i = 0; out && i < n; i++) {
        if (!is_map) {
            json_t *v = meta_json(&o->via.array.ptr[i], items, err, errlen);
            if (!v || json_array_append_new(out, v)) json_decref(out), out = NULL;
            continue;
        }
        const msgpack_object *k = &o->via.map.ptr[i].key;
        if (k->type != MSGPACK_OBJECT_STR) {
            errf(err, errlen, "frame: meta key is a msgpack %s, not a str", type_name(k));
            json_decref(out);
            return NULL;
        }
        const char *kp = k->via.str.ptr;
        size_t kn = k->via.str.size;
        const char *bad = memchr(kp, 0, kn) ? "contains a NUL byte" : json_object_getn(out, kp, kn) ? "is a duplicate" : NULL;
        if (bad) {
            errf(err, errlen, "frame: meta key '%s' %s", show(s, kp, kn), bad);
            json_decref(out);
            return NULL;
        }
        json_t *v = meta_json(&o->via.map.ptr[i].val, items, err, errlen);
        if (!v) json_decref(out), out = NULL;
        else if (json_object_setn_new(out, kp, kn, v)) {  // consumes v even on failure
            errf(err, errlen, "frame: meta key '%s' is not valid UTF-8", show(s, kp, kn));
            json_decref(out), out = NULL;
        }
    }
    if (!out && err && errlen && !err[0]) errf(err, errlen, "frame: out of memory converting meta");
    return out;
}

// the first NaN/Inf in float data, or -1
static long first_nonfinite(const WireTensor *t) {
    const unsigned char *p = t->data;
    if (t->dtype == WDT_F32) {
        for (size_t i = 0; i < t->numel; i++) {
            uint32_t u;
            memcpy(&u, p + 4 * i, 4);
            if ((u & 0x7f800000u) == 0x7f800000u) return (long)i;
        }
    } else if (t->dtype == WDT_F16) {
        for (size_t i = 0; i < t->numel; i++) {
            uint16_t h;
            memcpy(&h, p + 2 * i, 2);
            if ((h & 0x7c00u) == 0x7c00u) return (long)i;
        }
    }
    return -1;
}

enum { T_ND, T_TYPE, T_KIND, T_SHAPE, T_DATA, T_KEYS };
static const char *const tensor_keys[T_KEYS] = {"nd", "type", "kind", "shape", "data"};

static int decode_tensor(WireTensor *t, const msgpack_object *o, const FrameLimits *lim, char *err, size_t errlen) {
    const char *nm = t->name, *p;
    char s[48];
    size_t n;
    if (o->type != MSGPACK_OBJECT_MAP)
        return errf(err, errlen, "frame: tensor '%s' is a msgpack %s, not a map (msgpack_numpy's ndarray encoding)", nm, type_name(o));
    const msgpack_object *v[T_KEYS] = {0};
    for (uint32_t i = 0; i < o->via.map.size; i++) {
        const msgpack_object *k = &o->via.map.ptr[i].key;
        if (raw_of(k, &p, &n)) return errf(err, errlen, "frame: tensor '%s' has a key that is a msgpack %s, not bin or str", nm, type_name(k));
        int j = 0;
        while (j < T_KEYS && !raw_is(p, n, tensor_keys[j])) j++;
        if (j == T_KEYS) return errf(err, errlen, "frame: tensor '%s' has an unknown key '%s' (want nd, type, kind, shape, data)", nm, show(s, p, n));
        if (v[j]) return errf(err, errlen, "frame: tensor '%s' has a duplicate key '%s'", nm, tensor_keys[j]);
        v[j] = &o->via.map.ptr[i].val;
    }
    // nd and kind first: they say what a msgpack_numpy map that is no ndarray is
    if (v[T_ND] && (v[T_ND]->type != MSGPACK_OBJECT_BOOLEAN || !v[T_ND]->via.boolean))
        return errf(err, errlen, "frame: tensor '%s': 'nd' is not true (a numpy scalar is not a tensor)", nm);
    if (v[T_KIND] && (raw_of(v[T_KIND], &p, &n) || n != 0))
        return errf(err, errlen, "frame: tensor '%s': 'kind' is not empty (structured and object arrays are not supported)", nm);
    for (int j = 0; j < T_KEYS; j++)
        if (!v[j]) return errf(err, errlen, "frame: tensor '%s' has no key '%s' (want nd, type, kind, shape, data)", nm, tensor_keys[j]);
    if (raw_of(v[T_TYPE], &p, &n)) return errf(err, errlen, "frame: tensor '%s': dtype 'type' is a msgpack %s, not a str", nm, type_name(v[T_TYPE]));
    int d = 0;
    while (d < N_DTYPES && !raw_is(p, n, dtype_names[d])) d++;
    if (d == N_DTYPES) return errf(err, errlen, "frame: tensor '%s': dtype '%s' is not one of <f4 <f2 |u1 <i4 <i8", nm, show(s, p, n));
    t->dtype = (WireDtype)d;

    const msgpack_object *sh = v[T_SHAPE];
    if (sh->type != MSGPACK_OBJECT_ARRAY) return errf(err, errlen, "frame: tensor '%s': shape is a msgpack %s, not an array", nm, type_name(sh));
    if (sh->via.array.size > WIRE_MAX_DIMS)
        return errf(err, errlen, "frame: tensor '%s': shape has %u dims, more than the %d allowed", nm, sh->via.array.size, WIRE_MAX_DIMS);
    t->ndim = (int)sh->via.array.size;
    for (int i = 0; i < t->ndim; i++) {
        const msgpack_object *e = &sh->via.array.ptr[i];
        if (e->type != MSGPACK_OBJECT_POSITIVE_INTEGER || e->via.u64 > INT64_MAX)
            return errf(err, errlen, "frame: tensor '%s': shape entry %d is not a non-negative integer (a msgpack %s)", nm, i, type_name(e));
        t->shape[i] = (int64_t)e->via.u64;
    }
    if (v[T_DATA]->type != MSGPACK_OBJECT_BIN) return errf(err, errlen, "frame: tensor '%s': data is a msgpack %s, not bin", nm, type_name(v[T_DATA]));
    if (shape_size(t->shape, t->ndim, dtype_sizes[d], &t->numel, &t->nbytes))
        return errf(err, errlen, "frame: tensor '%s': the element count of its shape overflows", nm);
    if (t->nbytes != v[T_DATA]->via.bin.size)
        return errf(err, errlen, "frame: tensor '%s': data is %u bytes but shape has %zu elements of %s (%zu bytes): wrong byte length", nm,
                    v[T_DATA]->via.bin.size, t->numel, dtype_names[d], t->nbytes);
    t->data = v[T_DATA]->via.bin.ptr;
    long bad = lim && lim->allow_nonfinite ? -1 : first_nonfinite(t);
    if (bad >= 0) return errf(err, errlen, "frame: tensor '%s': element %ld is NaN or Inf (not finite)", nm, bad);
    return 0;
}

enum { E_V, E_KIND, E_STREAM, E_SEQ, E_TOTAL, E_META, E_TENSORS, E_KEYS };
static const char *const envelope_keys[E_KEYS] = {"v", "kind", "stream", "seq", "total", "meta", "tensors"};

static int decode_tree(Frame *f, const msgpack_object *top, const FrameLimits *lim, char *err, size_t errlen) {
    char s[48];
    if (top->type != MSGPACK_OBJECT_MAP) return errf(err, errlen, "frame: the top level is a msgpack %s, not a map", type_name(top));
    const msgpack_object *v[E_KEYS] = {0};
    for (uint32_t i = 0; i < top->via.map.size; i++) {
        const msgpack_object *k = &top->via.map.ptr[i].key;
        if (k->type != MSGPACK_OBJECT_STR) return errf(err, errlen, "frame: an envelope key is a msgpack %s, not a str", type_name(k));
        int j = 0;
        while (j < E_KEYS && !raw_is(k->via.str.ptr, k->via.str.size, envelope_keys[j])) j++;
        if (j == E_KEYS) return errf(err, errlen, "frame: unknown envelope key '%s'", show(s, k->via.str.ptr, k->via.str.size));
        if (v[j]) return errf(err, errlen, "frame: duplicate envelope key '%s'", envelope_keys[j]);
        v[j] = &top->via.map.ptr[i].val;
    }
    if (!v[E_V]) return errf(err, errlen, "frame: no version key 'v' (this build speaks version %d)", WIRE_VERSION);
    if (v[E_V]->type != MSGPACK_OBJECT_POSITIVE_INTEGER || v[E_V]->via.u64 != WIRE_VERSION) {
        if (v[E_V]->type == MSGPACK_OBJECT_POSITIVE_INTEGER)
            return errf(err, errlen, "frame: protocol version %llu, this build speaks version %d", (unsigned long long)v[E_V]->via.u64, WIRE_VERSION);
        return errf(err, errlen, "frame: protocol version 'v' is a msgpack %s, not the integer %d", type_name(v[E_V]), WIRE_VERSION);
    }
    if (!v[E_KIND]) return errf(err, errlen, "frame: no 'kind' key (want batch, end, error, request, reply or hello)");
    if (v[E_KIND]->type != MSGPACK_OBJECT_STR) return errf(err, errlen, "frame: 'kind' is a msgpack %s, not a str", type_name(v[E_KIND]));
    int kd = 0;
    while (kd < N_KINDS && !raw_is(v[E_KIND]->via.str.ptr, v[E_KIND]->via.str.size, kind_names[kd])) kd++;
    if (kd == N_KINDS)
        return errf(err, errlen, "frame: unknown kind '%s' (want batch, end, error, request, reply or hello)",
                    show(s, v[E_KIND]->via.str.ptr, v[E_KIND]->via.str.size));
    f->kind = (FrameKind)kd;
    if (!v[E_STREAM]) return errf(err, errlen, "frame: no 'stream' key (the stream name, a str)");
    if (take_name(f->stream, v[E_STREAM], "'stream'", 1, err, errlen)) return -1;
    if (!v[E_SEQ]) return errf(err, errlen, "frame: no sequence number 'seq'");
    if (v[E_SEQ]->type != MSGPACK_OBJECT_POSITIVE_INTEGER)
        return errf(err, errlen, "frame: sequence number 'seq' is a msgpack %s, not an unsigned integer", type_name(v[E_SEQ]));
    f->seq = v[E_SEQ]->via.u64;
    if (v[E_TOTAL]) {
        if (v[E_TOTAL]->type != MSGPACK_OBJECT_POSITIVE_INTEGER)
            return errf(err, errlen, "frame: 'total' is a msgpack %s, not an unsigned integer", type_name(v[E_TOTAL]));
        f->has_total = 1;
        f->total = v[E_TOTAL]->via.u64;
    }
    if (v[E_META]) {
        if (v[E_META]->type != MSGPACK_OBJECT_MAP) return errf(err, errlen, "frame: 'meta' is a msgpack %s, not a map", type_name(v[E_META]));
        size_t items = 0;
        if (err && errlen) err[0] = 0;
        if (!(f->meta = meta_json(v[E_META], &items, err, errlen))) return -1;
    }
    if (v[E_TENSORS]) {
        const msgpack_object *ts = v[E_TENSORS];
        if (ts->type != MSGPACK_OBJECT_MAP) return errf(err, errlen, "frame: 'tensors' is a msgpack %s, not a map", type_name(ts));
        if (ts->via.map.size > WIRE_MAX_TENSORS)
            return errf(err, errlen, "frame: %u tensors, too many (at most %d)", ts->via.map.size, WIRE_MAX_TENSORS);
        for (uint32_t i = 0; i < ts->via.map.size; i++) {
            WireTensor *t = &f->tensors[i];
            if (take_name(t->name, &ts->via.map.ptr[i].key, "tensor name", 0, err, errlen)) return -1;
            if (frame_tensor(f, t->name)) return errf(err, errlen, "frame: duplicate tensor name '%s'", t->name);
            if (decode_tensor(t, &ts->via.map.ptr[i].val, lim, err, errlen)) return -1;
            f->n_tensors++;
        }
    }
    return 0;
}

int frame_decode(Frame *f, const void *buf, size_t len, const FrameLimits *lim, char *err, size_t errlen) {
    memset(f, 0, sizeof(*f));
    const size_t max = lim && lim->max_bytes ? lim->max_bytes : WIRE_MAX_FRAME_BYTES;
    if (len > max) return errf(err, errlen, "frame: %zu bytes exceed the limit of %zu bytes", len, max);
    if (len == 0) return errf(err, errlen, "frame: empty message (0 bytes)");
    size_t end = 0, off = 0;
    if (prescan(buf, len, &end, err, errlen)) return -1;
    if (end != len) return errf(err, errlen, "frame: %zu trailing bytes after the msgpack object (which ends at byte %zu)", len - end, end);
    msgpack_unpacked u;
    msgpack_unpacked_init(&u);
    int rc = msgpack_unpack_next(&u, buf, len, &off);
    if (rc != MSGPACK_UNPACK_SUCCESS || off != len) {  // after the pre-scan only out-of-memory is expected here
        rc = errf(err, errlen, "frame: msgpack-c could not unpack %zu bytes (code %d, stopped at %zu)", len, rc, off);
    } else {
        rc = decode_tree(f, &u.data, lim, err, errlen);
    }
    msgpack_unpacked_destroy(&u);
    if (rc) {
        frame_release(f);
        memset(f, 0, sizeof(*f));
    }
    return rc;
}

int frame_check_batch(const Frame *f, char *err, size_t errlen) {
    static const struct { const char *name, *layout; WireDtype dtype; int ndim; } std[] = {
        {WIRE_IMAGE, "(N, C, H, W)", WDT_F32, 4}, {WIRE_LATENT, "(N, C, h, w)", WDT_F32, 4},
        {WIRE_LABEL, "(N,)", WDT_I32, 1}, {WIRE_SEED, "(N,)", WDT_I64, 1}};
    const char *first = NULL;
    int64_t N = 0;
    for (size_t i = 0; i < sizeof(std) / sizeof(std[0]); i++) {
        const WireTensor *t = frame_tensor(f, std[i].name);
        if (!t) continue;
        if (t->dtype != std[i].dtype)
            return errf(err, errlen, "batch %s #%llu: '%s' is %s, want %s", f->stream, (unsigned long long)f->seq, t->name,
                        wire_dtype_name(t->dtype), wire_dtype_name(std[i].dtype));
        if (t->ndim != std[i].ndim)
            return errf(err, errlen, "batch %s #%llu: '%s' has %d dims, want %d %s", f->stream, (unsigned long long)f->seq, t->name, t->ndim,
                        std[i].ndim, std[i].layout);
        if (!first) first = t->name, N = t->shape[0];
        else if (t->shape[0] != N)
            return errf(err, errlen, "batch %s #%llu: '%s' has N=%lld but '%s' has N=%lld: batch sizes differ", f->stream, (unsigned long long)f->seq,
                        t->name, (long long)t->shape[0], first, (long long)N);
    }
    if (!first) return errf(err, errlen, "batch %s #%llu: carries none of image, latent, label, seed", f->stream, (unsigned long long)f->seq);
    return 0;
}

// test_frame.c: the protocol-v1 frame codec (common/wire/frame.h): round trips, one test per
// protocol rule, zero-copy decoding, the malformed-frame corpus (and any fuzz finds), and frames
// exchanged with Python's msgpack + msgpack_numpy (tests/python/frame_roundtrip.py).
//
// Malformed frames are written in a small JSON notation (mp() below) so each case is one line:
// JSON values map onto msgpack (object -> map with str keys, int, float64, bool, nil), and strings
// carry prefixes: "b:text" is bin with those bytes, "x:HEX" bin with those bytes, "h:HEX" raw
// msgpack spliced in as is (ext, float32, huge length headers, int keys). A key's "#suffix" is
// dropped, which spells duplicate keys ("v" and "v#2").
#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <msgpack.h>

#include "check.h"
#include "testlib.h"
#include "wire/frame.h"

#define PY "/usr/bin/python3"  // Debian's python has msgpack, msgpack_numpy, numpy

// ---------------------------------------------------------------- the JSON notation

static int hexval(char c) { return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1; }

// hex digits (spaces ignored) -> bytes; returns the count
static size_t unhex(const char *h, unsigned char *out) {
    size_t n = 0;
    for (; *h; h++) {
        if (*h == ' ') continue;
        CHECK(hexval(h[0]) >= 0 && hexval(h[1]) >= 0, "bad hex in test case: %s", h);
        out[n++] = (unsigned char)(hexval(h[0]) << 4 | hexval(h[1]));
        h++;
    }
    return n;
}

static void mp_string(msgpack_packer *pk, msgpack_sbuffer *sb, const char *s, size_t n) {
    if (n >= 2 && (s[0] == 'b' || s[0] == 'x' || s[0] == 'h') && s[1] == ':') {
        unsigned char *b = xmalloc(n);
        size_t k = s[0] == 'b' ? (memcpy(b, s + 2, n - 2), n - 2) : unhex(s + 2, b);
        if (s[0] == 'h') msgpack_sbuffer_write(sb, (const char *)b, k);
        else msgpack_pack_bin(pk, k), msgpack_pack_bin_body(pk, b, k);
        free(b);
        return;
    }
    msgpack_pack_str(pk, n);
    msgpack_pack_str_body(pk, s, n);
}

static void mp_value(msgpack_packer *pk, msgpack_sbuffer *sb, const json_t *j) {
    switch (json_typeof(j)) {
    case JSON_OBJECT: {
        msgpack_pack_map(pk, json_object_size(j));
        const char *k;
        json_t *v;
        json_object_foreach((json_t *)j, k, v) {
            const char *hash = strchr(k, '#');
            mp_string(pk, sb, k, hash ? (size_t)(hash - k) : strlen(k));
            mp_value(pk, sb, v);
        }
        break;
    }
    case JSON_ARRAY:
        msgpack_pack_array(pk, json_array_size(j));
        for (size_t i = 0; i < json_array_size(j); i++) mp_value(pk, sb, json_array_get(j, i));
        break;
    case JSON_STRING: mp_string(pk, sb, json_string_value(j), json_string_length(j)); break;
    case JSON_INTEGER: msgpack_pack_int64(pk, json_integer_value(j)); break;
    case JSON_REAL: msgpack_pack_double(pk, json_real_value(j)); break;
    case JSON_TRUE: msgpack_pack_true(pk); break;
    case JSON_FALSE: msgpack_pack_false(pk); break;
    case JSON_NULL: msgpack_pack_nil(pk); break;
    }
}

// the notation -> msgpack bytes (malloc'd)
static unsigned char *mp(const char *spec, size_t *len) {
    json_error_t e;
    json_t *j = json_loads(spec, JSON_DECODE_ANY | JSON_ALLOW_NUL, &e);
    CHECK(j, "bad test case %s: %s", spec, e.text);
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    mp_value(&pk, &sb, j);
    json_decref(j);
    *len = sb.size;
    return (unsigned char *)sb.data;
}

// ---------------------------------------------------------------- helpers

static char out_dir[256];

// frame_set_meta takes its own reference; this hands over ours, like json_object_set_new
static void set_meta_new(Frame *f, json_t *meta) {
    frame_set_meta(f, meta);
    json_decref(meta);
}  // build/test-out/frames/<pid>: Python exchanges frames here

static int is_empty(const Frame *f) {
    static const Frame zero;
    return memcmp(f, &zero, sizeof(zero)) == 0;
}

static void expect_reject_bytes(const unsigned char *b, size_t n, const FrameLimits *lim, const char *want, const char *label) {
    Frame f;
    char err[1024] = "";
    int rc = frame_decode(&f, b, n, lim, err, sizeof(err));
    EXPECT(rc == -1, "%s: accepted, want a rejection mentioning '%s'", label, want);
    if (rc == 0) {
        frame_release(&f);
        return;
    }
    EXPECT(is_empty(&f), "%s: the Frame is not left empty after a failure", label);
    EXPECT(strncmp(err, "frame: ", 7) == 0, "%s: message lacks the 'frame: ' prefix: %s", label, err);
    EXPECT(strstr(err, want) != NULL, "%s: message '%s' does not mention '%s'", label, err, want);
}

static void expect_reject(const char *spec, const char *want) {
    size_t n;
    unsigned char *b = mp(spec, &n);
    expect_reject_bytes(b, n, NULL, want, spec);
    free(b);
}

static int decode_spec(Frame *f, const char *spec, const FrameLimits *lim, char *err, size_t errlen) {
    size_t n;
    unsigned char *b = mp(spec, &n);
    int rc = frame_decode(f, b, n, lim, err, errlen);
    frame_release(f);  // tensors would point into b
    free(b);
    return rc;
}

// Deterministic test values, the same in tests/python/frame_roundtrip.py: element i (flat, C order) is
//   <f4 and <f2: (i - 3) * 0.5    |u1: (i * 37) % 256    <i4: (i - 3) * 100003    <i8: (i - 3) * 1000000007000
static uint16_t half_exact(double x) {  // x is 0 or a normal half with <= 11 significant bits
    if (x == 0) return 0;
    int e;
    double m = frexp(fabs(x), &e);  // |x| = m 2^e, m in [0.5, 1)
    uint16_t h = (uint16_t)((e + 14) << 10 | (int)((2 * m - 1) * 1024));
    return x < 0 ? (uint16_t)(h | 0x8000) : h;
}

static void fill_pattern(void *out, WireDtype dt, size_t n) {
    for (size_t i = 0; i < n; i++) {
        long long k = (long long)i - 3;
        switch (dt) {
        case WDT_F32: ((float *)out)[i] = (float)k * 0.5f; break;
        case WDT_F16: ((uint16_t *)out)[i] = half_exact((double)k * 0.5); break;
        case WDT_U8: ((uint8_t *)out)[i] = (uint8_t)(i * 37 % 256); break;
        case WDT_I32: ((int32_t *)out)[i] = (int32_t)(k * 100003); break;
        case WDT_I64: ((int64_t *)out)[i] = k * 1000000007000LL; break;
        }
    }
}

typedef struct {
    const char *name;
    WireDtype dtype;
    int ndim;
    int64_t shape[WIRE_MAX_DIMS];
} Spec;

// every dtype, a 0-element tensor, a 0-dim scalar and an 8-dim tensor (also in frame_roundtrip.py)
static const Spec all_specs[] = {
    {"f4", WDT_F32, 3, {2, 3, 4}}, {"f2", WDT_F16, 1, {5}},   {"u1", WDT_U8, 3, {2, 2, 3}},
    {"i4", WDT_I32, 1, {7}},       {"i8", WDT_I64, 2, {3, 1}}, {"empty", WDT_F32, 3, {2, 0, 3}},
    {"scalar", WDT_I64, 0, {0}},   {"deep", WDT_U8, 8, {1, 2, 1, 1, 1, 1, 2, 1}},
};
#define N_SPECS ((int)(sizeof(all_specs) / sizeof(all_specs[0])))

static size_t spec_numel(const Spec *s) {
    size_t n = 1;
    for (int d = 0; d < s->ndim; d++) n *= (size_t)s->shape[d];
    return n;
}

static const char *all_meta_json =
    "{\"users\": [\"ID_1\", \"ID_2\", \"\\u00fc\"], \"stage\": \"test\", \"n\": -5, \"big\": 1099511627776, \"f\": 0.1, "
    "\"ok\": true, \"none\": null, \"nested\": {\"a\": [1, [2, {\"b\": 3}]], \"e\": {}, \"l\": []}}";

// the "all" frame: kind batch, stream "roundtrip", seq 3, total 10, all_meta_json, all_specs
static void build_all(Frame *f, void *bufs[N_SPECS]) {
    frame_init(f, FRAME_BATCH, "roundtrip", 3);
    f->has_total = 1;
    f->total = 10;
    set_meta_new(f, json_loads(all_meta_json, 0, NULL));
    for (int i = 0; i < N_SPECS; i++) {
        const Spec *s = &all_specs[i];
        size_t n = spec_numel(s);
        bufs[i] = xmalloc(n * wire_dtype_size(s->dtype) + 1);
        fill_pattern(bufs[i], s->dtype, n);
        CHECK(frame_add_tensor(f, s->name, s->dtype, s->ndim, s->shape, bufs[i]) == 0, "frame_add_tensor %s", s->name);
    }
}

static void free_bufs(void *bufs[N_SPECS]) {
    for (int i = 0; i < N_SPECS; i++) free(bufs[i]);
}

// f must be the "all" frame
static void expect_all(const Frame *f, const char *label) {
    EXPECT(f->kind == FRAME_BATCH && strcmp(f->stream, "roundtrip") == 0 && f->seq == 3 && f->has_total && f->total == 10,
           "%s: envelope kind %s stream '%s' seq %llu total %d/%llu", label, frame_kind_name(f->kind), f->stream,
           (unsigned long long)f->seq, f->has_total, (unsigned long long)f->total);
    json_t *want = json_loads(all_meta_json, 0, NULL);
    EXPECT(f->meta && json_equal(f->meta, want), "%s: meta differs", label);
    json_decref(want);
    EXPECT(f->n_tensors == N_SPECS, "%s: %d tensors, want %d", label, f->n_tensors, N_SPECS);
    for (int i = 0; i < N_SPECS && i < f->n_tensors; i++) {
        const Spec *s = &all_specs[i];
        const WireTensor *t = &f->tensors[i];
        size_t n = spec_numel(s), nb = n * wire_dtype_size(s->dtype);
        EXPECT(strcmp(t->name, s->name) == 0, "%s: tensor %d is '%s', want '%s' (order kept)", label, i, t->name, s->name);
        EXPECT(frame_tensor(f, s->name) == t, "%s: frame_tensor(%s)", label, s->name);
        EXPECT(t->dtype == s->dtype && t->ndim == s->ndim && memcmp(t->shape, s->shape, sizeof(int64_t) * (size_t)s->ndim) == 0,
               "%s: %s has dtype %s ndim %d", label, s->name, wire_dtype_name(t->dtype), t->ndim);
        EXPECT(t->numel == n && t->nbytes == nb, "%s: %s numel %zu nbytes %zu, want %zu %zu", label, s->name, t->numel, t->nbytes, n, nb);
        unsigned char *want_b = xmalloc(nb + 1);
        fill_pattern(want_b, s->dtype, n);
        EXPECT(nb == 0 || memcmp(t->data, want_b, nb) == 0, "%s: %s bytes differ from the pattern", label, s->name);
        free(want_b);
    }
}

// ---------------------------------------------------------------- round trips

static void test_roundtrip_all_dtypes(void) {
    Frame f, g;
    void *bufs[N_SPECS];
    build_all(&f, bufs);
    void *enc;
    size_t len;
    char err[1024];
    EXPECT(frame_encode(&f, &enc, &len, err, sizeof(err)) == 0, "encode: %s", err);
    if (tl_current_failed()) return;
    EXPECT(frame_decode(&g, enc, len, NULL, err, sizeof(err)) == 0, "decode: %s", err);
    if (!tl_current_failed()) expect_all(&g, "C round trip");
    EXPECT(g.tensors[6].numel == 1 && g.tensors[5].numel == 0 && g.tensors[5].nbytes == 0, "0-dim has 1 element, (2,0,3) has none");
    // encoding the decoded frame gives the same bytes
    void *enc2;
    size_t len2;
    EXPECT(frame_encode(&g, &enc2, &len2, err, sizeof(err)) == 0 && len2 == len && memcmp(enc, enc2, len) == 0, "re-encoding differs");
    free(enc2);
    // every dtype converts to float32
    for (int i = 0; i < g.n_tensors; i++) {
        const WireTensor *t = &g.tensors[i];
        float *got = xmalloc((t->numel + 1) * sizeof(float)), *want = xmalloc((t->numel + 1) * sizeof(float));
        for (size_t k = 0; k < t->numel; k++) {
            long long v = (long long)k - 3;
            want[k] = t->dtype == WDT_U8 ? (float)(k * 37 % 256) : t->dtype == WDT_I32 ? (float)(v * 100003)
                    : t->dtype == WDT_I64 ? (float)(v * 1000000007000LL) : (float)v * 0.5f;
        }
        wire_tensor_f32(got, t);
        EXPECT_CLOSE(t->name, got, want, t->numel, 0, 0);
        free(got);
        free(want);
    }
    frame_release(&g);
    frame_release(&g);  // twice is harmless
    frame_release(&f);
    EXPECT(f.meta == NULL, "frame_release leaves meta NULL");
    free(enc);
    free_bufs(bufs);
}

// The exact bytes Python writes for the same frame:
//   msgpack.packb({"v": 1, "kind": "batch", "stream": "s", "seq": 7, "total": 9,
//                  "meta": {"a": [1, -2, 2.5, True, None, "x", 300, -300]},
//                  "tensors": {"x": np.arange(6, dtype="<f4").reshape(2, 3)}}, default=msgpack_numpy.encode)
static void test_encoding_matches_msgpack_numpy(void) {
    static const char *want_hex =
        "87a17601a46b696e64a56261746368a673747265616da173a373657107a5746f74616c09a46d65746181a1619801fecb4004000000000000c3c0a178cd012cd1fed4"
        "a774656e736f727381a17885c4026e64c3c40474797065a33c6634c4046b696e64c400c4057368617065920203c40464617461c418000000000000803f0000004000"
        "004040000080400000a040";
    unsigned char want[512];
    size_t want_n = unhex(want_hex, want);
    float x[6] = {0, 1, 2, 3, 4, 5};
    Frame f;
    frame_init(&f, FRAME_BATCH, "s", 7);
    f.has_total = 1;
    f.total = 9;
    set_meta_new(&f, json_loads("{\"a\": [1, -2, 2.5, true, null, \"x\", 300, -300]}", 0, NULL));
    EXPECT(frame_add_tensor(&f, "x", WDT_F32, 2, (int64_t[]){2, 3}, x) == 0, "add");
    void *enc;
    size_t len;
    char err[256];
    EXPECT(frame_encode(&f, &enc, &len, err, sizeof(err)) == 0, "%s", err);
    EXPECT(len == want_n && memcmp(enc, want, len) == 0, "frame_encode's %zu bytes differ from msgpack_numpy's %zu", len, want_n);
    if (tl_current_failed()) {
        printf("  got  ");
        for (size_t i = 0; i < len; i++) printf("%02x", ((unsigned char *)enc)[i]);
        printf("\n  want %s\n", want_hex);
    }
    free(enc);
    frame_release(&f);

    // the smallest frame: no total, meta or tensors keys at all
    frame_init(&f, FRAME_END, "", 0);
    EXPECT(frame_encode(&f, &enc, &len, err, sizeof(err)) == 0, "%s", err);
    unsigned char small[64];
    size_t sn = unhex("84a17601a46b696e64a3656e64a673747265616da0a373657100", small);
    EXPECT(len == sn && memcmp(enc, small, sn) == 0, "minimal frame differs");
    free(enc);
}

static void test_meta_roundtrip(void) {
    const char *metas[] = {
        "{}",
        "{\"users\": [\"ID_1\", \"ID_2\"], \"model\": {\"name\": \"unet\", \"sample_size\": 32, \"scale\": 0.18215, \"ema\": false}}",
        ("{\"ints\": [0, -1, 127, 128, 255, 256, 65535, 65536, -32, -33, -129, -32769, 9223372036854775807, -9223372036854775807],"
         " \"reals\": [0.0, -0.0, 1e-300, 1.7976931348623157e308, -2.5], \"s\": \"\\u00fc\\u20ac\\ud83d\\ude00\", \"nul\": \"a\\u0000b\", \"nil\": null}"),
        // 14 levels inside meta: meta itself is level 2, so this reaches WIRE_MAX_DEPTH exactly
        "{\"d\": [[[[[[[[[[[[[[]]]]]]]]]]]]]]}",
    };
    for (size_t i = 0; i < sizeof(metas) / sizeof(metas[0]); i++) {
        json_error_t je;
        json_t *m = json_loads(metas[i], JSON_ALLOW_NUL, &je);
        CHECK(m, "meta %zu: %s", i, je.text);
        Frame f, g;
        frame_init(&f, FRAME_HELLO, "meta", i);
        frame_set_meta(&f, m);
        void *enc;
        size_t len;
        char err[512];
        EXPECT(frame_encode(&f, &enc, &len, err, sizeof(err)) == 0, "meta %zu: encode: %s", i, err);
        if (tl_current_failed()) return;
        EXPECT(frame_decode(&g, enc, len, NULL, err, sizeof(err)) == 0, "meta %zu: decode: %s", i, err);
        EXPECT(g.meta && json_equal(g.meta, m), "meta %zu differs after a round trip", i);
        EXPECT(g.kind == FRAME_HELLO && g.n_tensors == 0 && !g.has_total, "meta %zu: envelope", i);
        frame_release(&g);
        frame_release(&f);
        json_decref(m);
        free(enc);
    }
    // one meta on several frames: each holds a reference, the caller keeps its own
    json_t *shared = json_pack("{s:[s]}", "users", "ID_1");
    Frame a, b2;
    frame_init(&a, FRAME_BATCH, "s", 0);
    frame_init(&b2, FRAME_BATCH, "s", 1);
    frame_set_meta(&a, shared);
    frame_set_meta(&b2, shared);
    frame_set_meta(&b2, shared);  // setting the same one again keeps one reference
    EXPECT(shared->refcount == 3, "refcount %zu after two frames took it, want 3", shared->refcount);
    frame_release(&a);
    frame_set_meta(&b2, NULL);
    EXPECT(shared->refcount == 1 && b2.meta == NULL, "refcount %zu after both let go, want 1", shared->refcount);
    json_decref(shared);
    // float32 in meta decodes to a JSON real
    Frame g;
    char err[512];
    size_t n;
    unsigned char *b = mp("{\"v\":1,\"kind\":\"hello\",\"stream\":\"s\",\"seq\":0,\"meta\":{\"f\":\"h:ca3fc00000\"}}", &n);
    EXPECT(frame_decode(&g, b, n, NULL, err, sizeof(err)) == 0 && json_real_value(json_object_get(g.meta, "f")) == 1.5, "float32 meta: %s", err);
    frame_release(&g);
    free(b);
}

// ---------------------------------------------------------------- building and encoding errors

static void test_build_and_encode_errors(void) {
    Frame f;
    float x[4] = {0};
    frame_init(&f, FRAME_BATCH, "s", 0);
    EXPECT(frame_add_tensor(&f, "", WDT_F32, 1, (int64_t[]){1}, x) == -1, "empty name");
    EXPECT(frame_add_tensor(&f, "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", WDT_F32, 1, (int64_t[]){1}, x) == -1, "65-byte name");
    EXPECT(frame_add_tensor(&f, "a", WDT_F32, 1, (int64_t[]){-1}, x) == -1, "negative dim");
    EXPECT(frame_add_tensor(&f, "a", WDT_F32, 9, (int64_t[]){1, 1, 1, 1, 1, 1, 1, 1, 1}, x) == -1, "9 dims");
    EXPECT(frame_add_tensor(&f, "a", WDT_F32, 2, (int64_t[]){(int64_t)1 << 40, (int64_t)1 << 40}, x) == -1, "element count overflow");
    EXPECT(frame_add_tensor(&f, "a", WDT_F32, 1, (int64_t[]){(int64_t)1 << 62}, x) == -1, "byte size overflow");
    EXPECT(frame_add_tensor(&f, "a", (WireDtype)7, 1, (int64_t[]){1}, x) == -1, "unknown dtype");
    EXPECT(frame_add_tensor(&f, "a", WDT_F32, 1, (int64_t[]){2}, NULL) == -1, "no data");
    EXPECT(frame_add_tensor(&f, "a", WDT_F32, 1, (int64_t[]){0}, NULL) == 0, "0 elements need no data");
    EXPECT(frame_add_tensor(&f, "a", WDT_F32, 1, (int64_t[]){1}, x) == -1, "duplicate name");
    EXPECT(f.n_tensors == 1, "rejected tensors were added (%d)", f.n_tensors);
    char name[16];
    for (int i = 1; i < WIRE_MAX_TENSORS; i++) {
        snprintf(name, sizeof(name), "t%d", i);
        EXPECT(frame_add_tensor(&f, name, WDT_U8, 0, NULL, x) == 0, "tensor %d", i);
    }
    EXPECT(frame_add_tensor(&f, "full", WDT_U8, 0, NULL, x) == -1, "17th tensor");

    void *enc = NULL;
    size_t len;
    char err[512];
    Frame g;
    frame_init(&g, FRAME_BATCH, "s", 0);
    set_meta_new(&g, json_array());
    EXPECT(frame_encode(&g, &enc, &len, err, sizeof(err)) == -1 && strstr(err, "not a JSON object") && !enc, "array meta: %s", err);
    json_t *deep = json_object(), *cur = deep;
    for (int i = 0; i < WIRE_MAX_DEPTH; i++) {
        json_t *next = json_object();
        json_object_set_new(cur, "a", next);
        cur = next;
    }
    set_meta_new(&g, deep);  // drops the array
    EXPECT(frame_encode(&g, &enc, &len, err, sizeof(err)) == -1 && strstr(err, "deeper"), "deep meta: %s", err);
    json_t *many = json_array();
    for (int i = 0; i < WIRE_MAX_META_ITEMS; i++) json_array_append_new(many, json_null());
    set_meta_new(&g, json_pack("{so}", "many", many));
    EXPECT(frame_encode(&g, &enc, &len, err, sizeof(err)) == -1 && strstr(err, "entries"), "meta items: %s", err);
    frame_release(&g);
    g.tensors[0].dtype = WDT_F32;
    g.n_tensors = 1;
    g.tensors[0].ndim = 1;
    g.tensors[0].shape[0] = 3;
    g.tensors[0].nbytes = 8;  // inconsistent with the shape
    g.tensors[0].data = x;
    EXPECT(frame_encode(&g, &enc, &len, err, sizeof(err)) == -1 && strstr(err, "frame_add_tensor"), "hand-built tensor: %s", err);
    g.n_tensors = 0;
    g.kind = (FrameKind)9;
    EXPECT(frame_encode(&g, &enc, &len, err, sizeof(err)) == -1 && strstr(err, "kind"), "bad kind: %s", err);
    EXPECT(strcmp(frame_kind_name((FrameKind)9), "?") == 0 && wire_dtype_size((WireDtype)9) == 0, "out-of-range names");
    for (int k = 0; k < 6; k++) {
        frame_init(&g, (FrameKind)k, "s", 1);
        Frame h;
        EXPECT(frame_encode(&g, &enc, &len, err, sizeof(err)) == 0 && frame_decode(&h, enc, len, NULL, err, sizeof(err)) == 0 &&
                   h.kind == (FrameKind)k, "kind %s: %s", frame_kind_name((FrameKind)k), err);
        free(enc);
    }
}

// ---------------------------------------------------------------- one test per protocol rule

#define ENV "\"v\":1,\"kind\":\"batch\",\"stream\":\"s\",\"seq\":0"
#define T_U8(shape, data) "{\"b:nd\":true,\"b:type\":\"|u1\",\"b:kind\":\"b:\",\"b:shape\":" shape ",\"b:data\":" data "}"
#define ONE(tensor) "{" ENV ",\"tensors\":{\"x\":" tensor "}}"

static void test_rejects_envelope_rules(void) {
    static const struct { const char *spec, *want; } cases[] = {
        {"5", "not a map"},
        {"[1]", "top level is a msgpack array"},
        {"\"batch\"", "not a map"},
        {"{\"h:01\":1," ENV "}", "envelope key is a msgpack uint"},
        {"{\"b:v\":1,\"kind\":\"end\",\"stream\":\"s\",\"seq\":0}", "envelope key is a msgpack bin"},
        {"{" ENV ",\"extra\":1}", "unknown envelope key 'extra'"},
        {"{" ENV ",\"V\":1}", "unknown envelope key"},
        {"{" ENV ",\"v#2\":1}", "duplicate envelope key 'v'"},
        {"{" ENV ",\"seq#2\":0}", "duplicate envelope key 'seq'"},
        {"{\"kind\":\"end\",\"stream\":\"s\",\"seq\":0}", "no version"},
        {"{\"v\":2,\"kind\":\"end\",\"stream\":\"s\",\"seq\":0}", "version 2"},
        {"{\"v\":0,\"kind\":\"end\",\"stream\":\"s\",\"seq\":0}", "version 0"},
        {"{\"v\":-1,\"kind\":\"end\",\"stream\":\"s\",\"seq\":0}", "version 'v' is a msgpack negative int"},
        {"{\"v\":1.0,\"kind\":\"end\",\"stream\":\"s\",\"seq\":0}", "version 'v' is a msgpack float64"},
        {"{\"v\":\"1\",\"kind\":\"end\",\"stream\":\"s\",\"seq\":0}", "version 'v' is a msgpack str"},
        {"{\"v\":1,\"stream\":\"s\",\"seq\":0}", "no 'kind'"},
        {"{\"v\":1,\"kind\":1,\"stream\":\"s\",\"seq\":0}", "'kind' is a msgpack uint"},
        {"{\"v\":1,\"kind\":\"b:batch\",\"stream\":\"s\",\"seq\":0}", "'kind' is a msgpack bin"},
        {"{\"v\":1,\"kind\":\"batches\",\"stream\":\"s\",\"seq\":0}", "unknown kind 'batches'"},
        {"{\"v\":1,\"kind\":\"\",\"stream\":\"s\",\"seq\":0}", "unknown kind"},
        {"{\"v\":1,\"kind\":\"Batch\",\"stream\":\"s\",\"seq\":0}", "unknown kind"},
        {"{\"v\":1,\"kind\":\"end\",\"seq\":0}", "no 'stream'"},
        {"{\"v\":1,\"kind\":\"end\",\"stream\":7,\"seq\":0}", "'stream' is a msgpack uint, not a str"},
        {"{\"v\":1,\"kind\":\"end\",\"stream\":\"b:s\",\"seq\":0}", "'stream' is a msgpack bin"},
        {"{\"v\":1,\"kind\":\"end\",\"stream\":\"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\",\"seq\":0}", "too long"},
        {"{\"v\":1,\"kind\":\"end\",\"stream\":\"a\\u0000b\",\"seq\":0}", "NUL"},
        {"{\"v\":1,\"kind\":\"end\",\"stream\":\"s\"}", "no sequence number"},
        {"{\"v\":1,\"kind\":\"end\",\"stream\":\"s\",\"seq\":-1}", "sequence number 'seq' is a msgpack negative int"},
        {"{\"v\":1,\"kind\":\"end\",\"stream\":\"s\",\"seq\":1.5}", "sequence number"},
        {"{\"v\":1,\"kind\":\"end\",\"stream\":\"s\",\"seq\":null}", "sequence number"},
        {"{" ENV ",\"total\":-4}", "'total' is a msgpack negative int"},
        {"{" ENV ",\"total\":\"4\"}", "'total' is a msgpack str"},
        {"{" ENV ",\"meta\":[1]}", "'meta' is a msgpack array, not a map"},
        {"{" ENV ",\"meta\":null}", "'meta' is a msgpack nil"},
        {"{" ENV ",\"tensors\":[]}", "'tensors' is a msgpack array, not a map"},
        {"{" ENV ",\"tensors\":{\"h:01\":" T_U8("[1]", "\"b:a\"") "}}", "tensor name is a msgpack uint"},
        {"{" ENV ",\"tensors\":{\"b:x\":" T_U8("[1]", "\"b:a\"") "}}", "tensor name is a msgpack bin"},
        {"{" ENV ",\"tensors\":{\"\":" T_U8("[1]", "\"b:a\"") "}}", "tensor name is empty"},
        {"{" ENV ",\"tensors\":{\"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\":" T_U8("[1]", "\"b:a\"") "}}", "too long"},
        {"{" ENV ",\"tensors\":{\"x\":" T_U8("[1]", "\"b:a\"") ",\"x#2\":" T_U8("[1]", "\"b:a\"") "}}", "duplicate tensor name 'x'"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) expect_reject(cases[i].spec, cases[i].want);

    // 17 tensors
    char spec[8192];
    int k = snprintf(spec, sizeof(spec), "{" ENV ",\"tensors\":{");
    for (int i = 0; i <= WIRE_MAX_TENSORS; i++) k += snprintf(spec + k, sizeof(spec) - (size_t)k, "%s\"t%d\":" T_U8("[1]", "\"b:a\""), i ? "," : "", i);
    snprintf(spec + k, sizeof(spec) - (size_t)k, "}}");
    expect_reject(spec, "17 tensors, too many");
}

static void test_rejects_tensor_rules(void) {
    static const struct { const char *spec, *want; } cases[] = {
        {ONE("5"), "tensor 'x' is a msgpack uint, not a map"},
        {ONE("[1]"), "not a map"},
        {ONE("{\"b:nd\":true,\"b:type\":\"|u1\",\"b:kind\":\"b:\",\"b:shape\":[1]}"), "no key 'data'"},
        {ONE("{\"b:nd\":true,\"b:type\":\"|u1\",\"b:kind\":\"b:\",\"b:data\":\"b:a\"}"), "no key 'shape'"},
        {ONE("{\"b:nd\":true,\"b:type\":\"|u1\",\"b:shape\":[1],\"b:data\":\"b:a\"}"), "no key 'kind'"},
        {ONE("{\"b:type\":\"|u1\",\"b:kind\":\"b:\",\"b:shape\":[1],\"b:data\":\"b:a\"}"), "no key 'nd'"},
        {ONE("{\"b:nd\":true,\"b:kind\":\"b:\",\"b:shape\":[1],\"b:data\":\"b:a\"}"), "no key 'type'"},
        {ONE("{\"b:nd\":true,\"b:type\":\"|u1\",\"b:kind\":\"b:\",\"b:shape\":[1],\"b:data\":\"b:a\",\"b:extra\":1}"), "unknown key 'extra'"},
        {ONE("{\"b:nd\":true,\"b:type\":\"|u1\",\"b:kind\":\"b:\",\"b:shape\":[1],\"b:data\":\"b:a\",\"b:nd#2\":true}"), "duplicate key 'nd'"},
        {ONE("{\"b:nd\":true,\"b:type\":\"|u1\",\"b:kind\":\"b:\",\"b:shape\":[1],\"h:01\":\"b:a\"}"), "not bin or str"},
        {ONE("{\"b:nd\":false,\"b:type\":\"|u1\",\"b:kind\":\"b:\",\"b:shape\":[1],\"b:data\":\"b:a\"}"), "'nd' is not true"},
        {ONE("{\"b:nd\":1,\"b:type\":\"|u1\",\"b:kind\":\"b:\",\"b:shape\":[1],\"b:data\":\"b:a\"}"), "'nd' is not true"},
        {ONE("{\"b:nd\":true,\"b:type\":\"<f8\",\"b:kind\":\"b:\",\"b:shape\":[1],\"b:data\":\"b:aaaaaaaa\"}"), "dtype '<f8' is not one of"},
        {ONE("{\"b:nd\":true,\"b:type\":\">f4\",\"b:kind\":\"b:\",\"b:shape\":[1],\"b:data\":\"b:aaaa\"}"), "dtype '>f4'"},
        {ONE("{\"b:nd\":true,\"b:type\":\"u1\",\"b:kind\":\"b:\",\"b:shape\":[1],\"b:data\":\"b:a\"}"), "dtype 'u1'"},
        {ONE("{\"b:nd\":true,\"b:type\":5,\"b:kind\":\"b:\",\"b:shape\":[1],\"b:data\":\"b:a\"}"), "dtype 'type' is a msgpack uint"},
        {ONE("{\"b:nd\":true,\"b:type\":\"|u1\",\"b:kind\":\"b:V\",\"b:shape\":[1],\"b:data\":\"b:a\"}"), "'kind' is not empty"},
        {ONE("{\"b:nd\":true,\"b:type\":\"|u1\",\"b:kind\":0,\"b:shape\":[1],\"b:data\":\"b:a\"}"), "'kind' is not empty"},
        {ONE(T_U8("\"x\"", "\"b:a\"")), "shape is a msgpack str, not an array"},
        {ONE(T_U8("{}", "\"b:a\"")), "shape is a msgpack map"},
        {ONE(T_U8("[-1]", "\"b:a\"")), "shape entry 0 is not a non-negative integer (a msgpack negative int)"},
        {ONE(T_U8("[1,1.0]", "\"b:a\"")), "shape entry 1 is not a non-negative integer"},
        {ONE(T_U8("[\"h:cfffffffffffffffff\"]", "\"b:a\"")), "shape entry 0 is not a non-negative integer"},
        {ONE(T_U8("[1,1,1,1,1,1,1,1,1]", "\"b:a\"")), "9 dims, more than the 8"},
        {ONE(T_U8("[1]", "\"a\"")), "data is a msgpack str, not bin"},
        {ONE(T_U8("[1]", "[97]")), "data is a msgpack array, not bin"},
        {ONE(T_U8("[3]", "\"b:ab\"")), "data is 2 bytes but shape has 3 elements of |u1 (3 bytes): wrong byte length"},
        {ONE(T_U8("[2,0]", "\"b:ab\"")), "wrong byte length"},
        {ONE(T_U8("[]", "\"b:\"")), "wrong byte length"},
        {ONE("{\"b:nd\":true,\"b:type\":\"<f4\",\"b:kind\":\"b:\",\"b:shape\":[2],\"b:data\":\"b:aaaa\"}"), "wrong byte length"},
        {ONE("{\"b:nd\":true,\"b:type\":\"<i8\",\"b:kind\":\"b:\",\"b:shape\":[1],\"b:data\":\"b:aaaa\"}"), "wrong byte length"},
        {ONE(T_U8("[1099511627776,1099511627776]", "\"b:\"")), "overflows"},
        {ONE("{\"b:nd\":true,\"b:type\":\"<f4\",\"b:kind\":\"b:\",\"b:shape\":[4611686018427387904],\"b:data\":\"b:\"}"), "overflows"},
        {ONE("{\"b:nd\":true,\"b:type\":\"<f4\",\"b:kind\":\"b:\",\"b:shape\":[2],\"b:data\":\"x:0000803f 0000c07f\"}"), "element 1 is NaN or Inf (not finite)"},
        {ONE("{\"b:nd\":true,\"b:type\":\"<f4\",\"b:kind\":\"b:\",\"b:shape\":[1],\"b:data\":\"x:000080ff\"}"), "element 0 is NaN or Inf"},
        {ONE("{\"b:nd\":true,\"b:type\":\"<f2\",\"b:kind\":\"b:\",\"b:shape\":[3],\"b:data\":\"x:003c 0000 007e\"}"), "element 2 is NaN or Inf"},
        {ONE("{\"b:nd\":true,\"b:type\":\"<f2\",\"b:kind\":\"b:\",\"b:shape\":[1],\"b:data\":\"x:00fc\"}"), "not finite"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) expect_reject(cases[i].spec, cases[i].want);

    // allow_nonfinite lets the same NaN/Inf through; integers are never checked
    FrameLimits lim = {.allow_nonfinite = 1};
    Frame f;
    char err[512];
    EXPECT(decode_spec(&f, ONE("{\"b:nd\":true,\"b:type\":\"<f4\",\"b:kind\":\"b:\",\"b:shape\":[2],\"b:data\":\"x:0000803f 0000c07f\"}"), &lim, err, sizeof(err)) == 0,
           "allow_nonfinite: %s", err);
    EXPECT(decode_spec(&f, ONE("{\"b:nd\":true,\"b:type\":\"<f2\",\"b:kind\":\"b:\",\"b:shape\":[1],\"b:data\":\"x:00fc\"}"), &lim, err, sizeof(err)) == 0,
           "allow_nonfinite f16: %s", err);
    EXPECT(decode_spec(&f, ONE("{\"b:nd\":true,\"b:type\":\"<i4\",\"b:kind\":\"b:\",\"b:shape\":[1],\"b:data\":\"x:0000c07f\"}"), NULL, err, sizeof(err)) == 0,
           "i4 with NaN's bit pattern: %s", err);
    // keys as str instead of bin, kind as empty str, type as bin, keys in another order: other clients do that
    EXPECT(decode_spec(&f, ONE("{\"data\":\"b:ab\",\"shape\":[2],\"kind\":\"\",\"type\":\"b:|u1\",\"nd\":true}"), NULL, err, sizeof(err)) == 0, "str keys: %s", err);
    EXPECT(decode_spec(&f, ONE("{\"b:nd\":true,\"type\":\"|u1\",\"b:kind\":\"b:\",\"shape\":[2],\"b:data\":\"b:ab\"}"), NULL, err, sizeof(err)) == 0, "mixed keys: %s", err);
    // envelope keys in any order, empty tensors map, empty stream
    EXPECT(decode_spec(&f, "{\"tensors\":{},\"seq\":5,\"stream\":\"\",\"kind\":\"reply\",\"v\":1,\"total\":0}", NULL, err, sizeof(err)) == 0 &&
               f.kind == FRAME_REPLY && f.seq == 5 && f.has_total && f.total == 0 && f.n_tensors == 0, "reordered envelope: %s", err);
}

static void test_rejects_meta_rules(void) {
    static const struct { const char *spec, *want; } cases[] = {
        {"{" ENV ",\"meta\":{\"a\":\"b:xyz\"}}", "meta holds a msgpack bin"},
        {"{" ENV ",\"meta\":{\"a\":[1,{\"b\":\"h:d40100\"}]}}", "meta holds a msgpack ext"},
        {"{" ENV ",\"meta\":{\"a\":\"h:c70301616263\"}}", "meta holds a msgpack ext"},
        {"{" ENV ",\"meta\":{\"h:01\":1}}", "meta key is a msgpack uint"},
        {"{" ENV ",\"meta\":{\"b:k\":1}}", "meta key is a msgpack bin"},
        {"{" ENV ",\"meta\":{\"k\":1,\"k#2\":2}}", "meta key 'k' is a duplicate"},
        {"{" ENV ",\"meta\":{\"h:a3610062\":1}}", "contains a NUL byte"},
        {"{" ENV ",\"meta\":{\"h:a1ff\":1}}", "not valid UTF-8"},
        {"{" ENV ",\"meta\":{\"k\":\"h:a2c328\"}}", "not valid UTF-8"},
        {"{" ENV ",\"meta\":{\"k\":\"h:cfffffffffffffffff\"}}", "does not fit a signed 64-bit integer"},
        {"{" ENV ",\"meta\":{\"k\":\"h:cb7ff8000000000000\"}}", "meta float nan is not finite"},
        {"{" ENV ",\"meta\":{\"k\":\"h:ca7f800000\"}}", "is not finite"},
        {"{" ENV ",\"meta\":{\"d\":[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]}}", "nest deeper than 16"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) expect_reject(cases[i].spec, cases[i].want);

    // more than WIRE_MAX_META_ITEMS entries in all (the limit itself passes)
    for (int extra = 0; extra <= 1; extra++) {
        size_t cap = 64 + 2 * (size_t)WIRE_MAX_META_ITEMS;
        char *spec = xmalloc(cap);
        size_t k = (size_t)snprintf(spec, cap, "{" ENV ",\"meta\":{\"a\":[");
        for (int i = 0; i < WIRE_MAX_META_ITEMS - 1 + extra; i++) k += (size_t)snprintf(spec + k, cap - k, "%s0", i ? "," : "");
        snprintf(spec + k, cap - k, "]}}");
        Frame f;
        char err[512] = "";
        if (extra) expect_reject(spec, "more than 65536 map/array entries (WIRE_MAX_META_ITEMS)");
        else EXPECT(decode_spec(&f, spec, NULL, err, sizeof(err)) == 0, "65536 meta entries: %s", err);
        free(spec);
    }
}

// Truncation, trailing bytes, lying lengths and counts, nesting, size limits: the byte-level rules.
static void test_rejects_structure(void) {
    size_t n;
    unsigned char *good = mp(ONE(T_U8("[2,2]", "\"b:abcd\"")), &n);
    Frame f;
    char err[512];
    EXPECT(frame_decode(&f, good, n, NULL, err, sizeof(err)) == 0, "the base frame: %s", err);
    int accepted = 0;
    for (size_t len = 0; len < n; len++) {
        err[0] = 0;
        if (frame_decode(&f, good, len, NULL, err, sizeof(err)) == 0) accepted++;
        else EXPECT(err[0] && (len == 0 ? strstr(err, "empty") : strstr(err, "truncated")) != NULL, "prefix of %zu bytes: '%s'", len, err);
    }
    EXPECT(accepted == 0, "%d truncated copies of a %zu-byte frame were accepted", accepted, n);
    unsigned char *longer = xcalloc(1, n + 3);
    memcpy(longer, good, n);
    expect_reject_bytes(longer, n + 1, NULL, "1 trailing bytes", "one extra byte");
    memcpy(longer + n, good, 3);
    expect_reject_bytes(longer, n + 3, NULL, "3 trailing bytes", "three extra bytes");
    free(longer);
    FrameLimits small = {.max_bytes = n - 1};
    expect_reject_bytes(good, n, &small, "exceed the limit", "max_bytes");
    small.max_bytes = n;
    EXPECT(frame_decode(&f, good, n, &small, err, sizeof(err)) == 0, "exactly max_bytes: %s", err);
    free(good);

    static const struct { const char *hex, *want; } raw[] = {
        {"c1", "reserved byte 0xc1"},
        {"81a176c1", "reserved byte"},
        {"c0c0", "trailing"},
        // lengths and counts far beyond the buffer: rejected before anything is allocated
        {"c6ffffffff00000000000000", "declares 4294967295 bytes"},                              // bin32
        {"dbffffffff6b", "declares 4294967295 bytes"},                                        // str32
        {"c9ffffffff01", "declares 4294967296 bytes"},                                        // ext32 (+ type byte)
        {"ddffffffffc0c0c0", "an array at offset 0 declares 4294967295 entries"},                // array32
        {"dfffffffffc0c0c0", "a map at offset 0 declares 4294967295 entries"},                  // map32
        {"dc0100c0", "array at offset 0 declares 256 entries"},                               // array16
        {"81a1618ac0", "map at offset 3 declares 10 entries but only 1 bytes remain"},        // fixmap inside
        {"81a176dfffffffff", "declares 4294967295 entries"},
        {"81a174dd7fffffff81a161c0", "declares 2147483647 entries"},
        {"81a174c4", "truncated: the length field"},
        {"81a174c5ff", "truncated: the length field"},
        {"81a174cf0001", "declares 8 bytes but only 2 remain"},
        {"81a174d8", "truncated"},
        {"81a17492cc01", "truncated: the msgpack ends after 6 bytes, inside an unfinished map/array"},
        {"81a17492c405", "declares 5 bytes but only 0 remain"},
    };
    for (size_t i = 0; i < sizeof(raw) / sizeof(raw[0]); i++) {
        unsigned char b[256];
        size_t k = unhex(raw[i].hex, b);
        expect_reject_bytes(b, k, NULL, raw[i].want, raw[i].hex);
    }
    // the same lies inside an otherwise valid envelope
    expect_reject("{" ENV ",\"meta\":{\"a\":\"h:ddffffffff\"},\"x\":1}", "declares 4294967295 entries");
    expect_reject("{" ENV ",\"meta\":{\"a\":\"h:dfffffffff\"}}", "declares 4294967295 entries");
    expect_reject(ONE("{\"b:nd\":true,\"b:type\":\"|u1\",\"b:kind\":\"b:\",\"b:shape\":[1],\"b:data\":\"h:c6ffffffff\"}"), "declares 4294967295 bytes");

    // nesting: 16 levels pass the byte scan (and fail as an unknown key), 17 do not
    char spec[256];
    for (int depth = 16; depth <= 17; depth++) {
        int k = snprintf(spec, sizeof(spec), "{" ENV ",\"x\":");
        for (int i = 0; i < depth - 1; i++) spec[k++] = '[';
        for (int i = 0; i < depth - 1; i++) spec[k++] = ']';
        snprintf(spec + k, sizeof(spec) - (size_t)k, "}");
        expect_reject(spec, depth == 16 ? "unknown envelope key 'x'" : "nest deeper than 16 levels (WIRE_MAX_DEPTH)");
    }
    unsigned char deep[64];
    memset(deep, 0x91, sizeof(deep));
    deep[63] = 0xc0;
    expect_reject_bytes(deep, sizeof(deep), NULL, "deeper", "64 nested arrays");

    // more map/array entries than any frame can need, outside meta
    size_t big_n = 3 + 65535;
    unsigned char *big = xcalloc(1, big_n);
    big[0] = 0xdc, big[1] = 0xff, big[2] = 0xff;  // array16 of 65535 (0x00: fixint 0)
    unsigned char *two = xcalloc(1, 2 * big_n + 1);
    two[0] = 0x92;
    memcpy(two + 1, big, big_n);
    memcpy(two + 1 + big_n, big, big_n);
    expect_reject_bytes(two, 1 + 2 * big_n, NULL, "map/array entries in all", "131072 entries");
    free(two);
    free(big);
}

// Tensor data is not copied: it points into the caller's buffer.
static void test_zero_copy(void) {
    Frame f, g;
    void *bufs[N_SPECS];
    build_all(&f, bufs);
    void *enc;
    size_t len;
    char err[512];
    EXPECT(frame_encode(&f, &enc, &len, err, sizeof(err)) == 0, "%s", err);
    EXPECT(frame_decode(&g, enc, len, NULL, err, sizeof(err)) == 0, "%s", err);
    if (tl_current_failed()) return;
    const unsigned char *lo = enc, *hi = lo + len;
    for (int i = 0; i < g.n_tensors; i++) {
        const unsigned char *p = g.tensors[i].data;
        EXPECT(p >= lo && p + g.tensors[i].nbytes <= hi, "tensor %s data at %p is outside the buffer [%p, %p)", g.tensors[i].name, (const void *)p, (const void *)lo, (const void *)hi);
    }
    // writing the buffer changes what the tensor reads
    const WireTensor *t = frame_tensor(&g, "f4");
    float v;
    ((unsigned char *)enc)[(const unsigned char *)t->data - lo + 3] ^= 0x40;
    memcpy(&v, t->data, 4);
    EXPECT(v != -1.5f, "tensor data was copied (still reads %g)", (double)v);
    frame_release(&g);
    frame_release(&f);
    free_bufs(bufs);
    free(enc);
}

static void test_check_batch(void) {
    float img[2 * 3 * 4 * 4] = {0}, lat[2 * 4 * 2 * 2] = {0};
    int32_t lab[2] = {0, 1};
    int64_t seed[2] = {5, 6};
    char err[512];
    Frame f;
    frame_init(&f, FRAME_BATCH, "train", 9);
    EXPECT(frame_check_batch(&f, err, sizeof(err)) == -1 && strstr(err, "none of image"), "empty batch: %s", err);
    frame_add_tensor(&f, WIRE_IMAGE, WDT_F32, 4, (int64_t[]){2, 3, 4, 4}, img);
    frame_add_tensor(&f, WIRE_LABEL, WDT_I32, 1, (int64_t[]){2}, lab);
    frame_add_tensor(&f, WIRE_SEED, WDT_I64, 1, (int64_t[]){2}, seed);
    frame_add_tensor(&f, WIRE_LATENT, WDT_F32, 4, (int64_t[]){2, 4, 2, 2}, lat);
    frame_add_tensor(&f, "extra", WDT_U8, 0, NULL, lab);  // other tensors are the stages' business
    EXPECT(frame_check_batch(&f, err, sizeof(err)) == 0, "a good batch: %s", err);

    static const struct { int which; WireDtype dt; int ndim; int64_t shape[4]; const char *want; } bad[] = {
        {0, WDT_F16, 4, {2, 3, 4, 4}, "'image' is <f2, want <f4"},
        {0, WDT_F32, 3, {2, 3, 16}, "'image' has 3 dims, want 4 (N, C, H, W)"},
        {1, WDT_I64, 1, {2}, "'label' is <i8, want <i4"},
        {1, WDT_I32, 2, {2, 1}, "'label' has 2 dims, want 1"},
        {1, WDT_I32, 1, {3}, "'label' has N=3 but 'image' has N=2"},
        {2, WDT_I32, 1, {2}, "'seed' is <i4, want <i8"},
        {2, WDT_I64, 1, {1}, "'seed' has N=1"},
        {3, WDT_F32, 4, {3, 4, 2, 2}, "'latent' has N=3"},
        {3, WDT_U8, 4, {2, 4, 2, 2}, "'latent' is |u1"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        Frame g = f;
        WireTensor *t = &g.tensors[bad[i].which];
        t->dtype = bad[i].dt;
        t->ndim = bad[i].ndim;
        memcpy(t->shape, bad[i].shape, sizeof(bad[i].shape));
        err[0] = 0;
        EXPECT(frame_check_batch(&g, err, sizeof(err)) == -1 && strstr(err, bad[i].want) && strstr(err, "train #9"), "case %zu: '%s' lacks '%s'", i, err, bad[i].want);
    }
    Frame g;
    frame_init(&g, FRAME_BATCH, "x", 0);
    frame_add_tensor(&g, WIRE_LATENT, WDT_F32, 4, (int64_t[]){0, 4, 2, 2}, NULL);
    frame_add_tensor(&g, WIRE_SEED, WDT_I64, 1, (int64_t[]){0}, NULL);
    EXPECT(frame_check_batch(&g, err, sizeof(err)) == 0, "latent + seed only, N=0: %s", err);
}

// ---------------------------------------------------------------- corpus and fuzz finds

static unsigned char *read_all(const char *path, size_t *n) {
    FILE *fp = fopen(path, "rb");
    if (!fp) return NULL;
    fseek(fp, 0, SEEK_END);
    long sz = ftell(fp);
    fseek(fp, 0, SEEK_SET);
    *n = sz > 0 ? (size_t)sz : 0;
    unsigned char *b = xmalloc(*n + 1);
    if (fread(b, 1, *n, fp) != *n) *n = 0;
    fclose(fp);
    return b;
}

// What every accepted frame must satisfy (the fuzz target checks the same).
static void expect_sane(const Frame *f, const unsigned char *b, size_t n, const char *path) {
    EXPECT(f->n_tensors >= 0 && f->n_tensors <= WIRE_MAX_TENSORS && strlen(f->stream) <= WIRE_MAX_NAME, "%s: envelope out of range", path);
    EXPECT(!f->meta || json_is_object(f->meta), "%s: meta is not an object", path);
    for (int i = 0; i < f->n_tensors; i++) {
        const WireTensor *t = &f->tensors[i];
        const unsigned char *p = t->data;
        EXPECT(t->nbytes == t->numel * wire_dtype_size(t->dtype) && p >= b && p + t->nbytes <= b + n && frame_tensor(f, t->name) == t,
               "%s: tensor %s inconsistent", path, t->name);
    }
}

// replays every *.bin in dir; with named=1 ok_* must decode and bad_* must be rejected, else either
static void replay_dir(const char *dir, int named, const unsigned char *good, size_t good_n, int *n_ok, int *n_bad) {
    DIR *d = opendir(dir);
    if (!d) return;
    for (struct dirent *e; (e = readdir(d));) {
        size_t len = strlen(e->d_name);
        if (e->d_name[0] == '.' || (named && (len < 4 || strcmp(e->d_name + len - 4, ".bin") != 0))) continue;
        char path[1024], err[1024] = "";
        snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
        size_t n;
        unsigned char *b = read_all(path, &n);
        if (!b) continue;  // a folder
        Frame f;
        int rc = frame_decode(&f, b, n, NULL, err, sizeof(err));
        if (rc == 0) expect_sane(&f, b, n, path);
        else EXPECT(strncmp(err, "frame: ", 7) == 0 && strlen(err) > 16 && is_empty(&f), "%s: rejected with message '%s'", path, err);
        if (named && strncmp(e->d_name, "ok_", 3) == 0) {
            (*n_ok)++;
            EXPECT(rc == 0, "%s rejected: %s", path, err);
        } else if (named) {
            (*n_bad)++;
            EXPECT(rc == -1, "%s accepted, want a rejection", path);
            if (strncmp(e->d_name, "bad_", 4) != 0) EXPECT(0, "%s: corpus files are named ok_* or bad_*", path);
        }
        if (!named) (*n_ok)++;
        if (rc == 0) frame_release(&f);
        free(b);
        // a rejected frame leaves nothing behind: the next good one decodes as before
        Frame g;
        EXPECT(frame_decode(&g, good, good_n, NULL, err, sizeof(err)) == 0 && g.n_tensors == N_SPECS && g.meta, "good frame after %s: %s", path, err);
        expect_all(&g, "good frame after a corpus file");
        frame_release(&g);
    }
    closedir(d);
}

static void test_corpus(void) {
    const char *dir = getenv("DOPPEL_FRAME_CORPUS") ? getenv("DOPPEL_FRAME_CORPUS") : "tests/corpus/frames";
    Frame f;
    void *bufs[N_SPECS], *good;
    size_t good_n;
    char err[512], fuzz[1024];
    build_all(&f, bufs);
    CHECK(frame_encode(&f, &good, &good_n, err, sizeof(err)) == 0, "%s", err);
    frame_release(&f);
    int n_ok = 0, n_bad = 0, n_fuzz = 0, dummy = 0;
    DIR *d = opendir(dir);
    EXPECT(d != NULL, "cannot open corpus %s (run from the repository root)", dir);
    if (d) closedir(d);
    replay_dir(dir, 1, good, good_n, &n_ok, &n_bad);
    snprintf(fuzz, sizeof(fuzz), "%s/fuzz", dir);
    replay_dir(fuzz, 0, good, good_n, &n_fuzz, &dummy);
    printf("  corpus: %d valid, %d malformed files, %d fuzz finds\n", n_ok, n_bad, n_fuzz);
    EXPECT(n_ok >= 3 && n_bad >= 20, "corpus %s too small (%d ok, %d bad); regenerate with make_corpus.py", dir, n_ok, n_bad);
    free(good);
    free_bufs(bufs);
}

// ---------------------------------------------------------------- Python (msgpack + msgpack_numpy)

static int write_frame(const char *name, const Frame *f) {
    void *enc;
    size_t len;
    char err[512], path[512];
    if (frame_encode(f, &enc, &len, err, sizeof(err))) return tl_fail(__FILE__, __LINE__, "encode %s: %s", name, err), -1;
    snprintf(path, sizeof(path), "%s/%s", out_dir, name);
    FILE *fp = fopen(path, "wb");
    int ok = fp && fwrite(enc, 1, len, fp) == len;
    if (fp) ok &= fclose(fp) == 0;
    EXPECT(ok, "cannot write %s", path);
    free(enc);
    return ok ? 0 : -1;
}

static void test_python_roundtrip(void) {
    if (access(PY, X_OK) != 0 || system(PY " -c 'import msgpack, msgpack_numpy, numpy' 2>/dev/null") != 0) {
        tl_skip(PY " lacks msgpack, msgpack_numpy or numpy (apt install python3-msgpack-numpy)");
        return;
    }
    char cmd[1024];
    snprintf(cmd, sizeof(cmd), "mkdir -p %s", out_dir);
    CHECK(system(cmd) == 0, "%s failed", cmd);
    Frame f;
    void *bufs[N_SPECS];
    build_all(&f, bufs);
    write_frame("c_all.bin", &f);
    frame_release(&f);
    frame_init(&f, FRAME_END, "roundtrip", 11);
    f.has_total = 1;
    f.total = 10;
    write_frame("c_end.bin", &f);

    snprintf(cmd, sizeof(cmd), PY " tests/python/frame_roundtrip.py %s", out_dir);
    int rc = system(cmd);
    EXPECT(rc == 0, "`%s` failed (status %d)", cmd, rc);
    if (rc != 0) goto done;

    // Python's frames: the same content, so msgpack_numpy must have written the very same bytes
    static const char *names[] = {"py_all.bin", "py_strkeys.bin", "py_end.bin"};
    size_t c_n;
    char path[512];
    snprintf(path, sizeof(path), "%s/c_all.bin", out_dir);
    unsigned char *c_all = read_all(path, &c_n);
    for (int i = 0; i < 3; i++) {
        snprintf(path, sizeof(path), "%s/%s", out_dir, names[i]);
        size_t n;
        unsigned char *b = read_all(path, &n);
        EXPECT(b, "Python did not write %s", path);
        if (!b) continue;
        Frame g;
        char err[512];
        EXPECT(frame_decode(&g, b, n, NULL, err, sizeof(err)) == 0, "%s: %s", path, err);
        if (i < 2) expect_all(&g, names[i]);
        else EXPECT(g.kind == FRAME_END && g.seq == 11 && g.total == 10 && !g.meta && !g.n_tensors, "%s: envelope", path);
        if (i == 0) EXPECT(c_all && n == c_n && memcmp(b, c_all, n) == 0, "py_all.bin (%zu bytes) and c_all.bin (%zu bytes) differ", n, c_n);
        frame_release(&g);
        free(b);
    }
    free(c_all);
done:
    free_bufs(bufs);
    if (!tl_current_failed()) {
        snprintf(cmd, sizeof(cmd), "rm -rf %s", out_dir);
        if (system(cmd) != 0) printf("  could not remove %s\n", out_dir);
    } else {
        printf("  frames kept in %s\n", out_dir);
    }
}

int main(void) {
    snprintf(out_dir, sizeof(out_dir), "build/test-out/frames/%d", (int)getpid());
    RUN(test_roundtrip_all_dtypes);
    RUN(test_encoding_matches_msgpack_numpy);
    RUN(test_meta_roundtrip);
    RUN(test_build_and_encode_errors);
    RUN(test_rejects_envelope_rules);
    RUN(test_rejects_tensor_rules);
    RUN(test_rejects_meta_rules);
    RUN(test_rejects_structure);
    RUN(test_zero_copy);
    RUN(test_check_batch);
    RUN(test_corpus);
    RUN(test_python_roundtrip);
    return tl_finish();
}

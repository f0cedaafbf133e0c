// test_safetensors.c: the safetensors reader/writer, atomic files, and checkpoints over a ParamSet.
#include <dirent.h>
#include <ftw.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "check.h"
#include "io/checkpoint.h"
#include "io/fileio.h"
#include "io/safetensors.h"
#include "params.h"
#include "rng.h"
#include "testlib.h"

static int is_zeroed(const SafeTensors *st) {
    static const SafeTensors zero;
    return memcmp(st, &zero, sizeof(zero)) == 0;
}

// 8-byte length + header + data_len zero bytes
static unsigned char *make_file(const char *header, size_t data_len, size_t *size) {
    size_t h = strlen(header);
    *size = 8 + h + data_len;
    unsigned char *b = xcalloc(1, *size);
    for (int i = 0; i < 8; i++) b[i] = (unsigned char)((uint64_t)h >> (8 * i));
    memcpy(b + 8, header, h);
    return b;
}

static void expect_reject_bytes(const unsigned char *b, size_t n, const char *want, const char *label) {
    SafeTensors st;
    char err[1024] = "";
    int rc = st_parse(&st, b, n, err, sizeof(err));
    EXPECT(rc == -1, "%s: accepted, want rejection mentioning '%s'", label, want);
    if (rc == 0) {
        st_free(&st);
        return;
    }
    EXPECT(is_zeroed(&st), "%s: st not left empty after a failure", label);
    EXPECT(strncmp(err, "safetensors buffer: ", 20) == 0, "%s: message lacks the source: %s", label, err);
    EXPECT(strstr(err, want) != NULL, "%s: message '%s' does not mention '%s'", label, err, want);
}

static void expect_reject(const char *header, size_t data_len, const char *want) {
    size_t n;
    unsigned char *b = make_file(header, data_len, &n);
    expect_reject_bytes(b, n, want, header);
    free(b);
}

// ---------------------------------------------------------------- reader validation

static void test_rejects_malformed_headers(void) {
    static const struct {
        const char *header;
        size_t data;
        const char *want;
    } cases[] = {
        {"{not json", 0, "not valid JSON"},
        {"{} x", 0, "not valid JSON"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,99999999999999999999]}}", 4, "not valid JSON"},
        {"[1,2]", 0, "not a JSON object"},
        {"5", 0, "not a JSON object"},
        {"\"str\"", 0, "not a JSON object"},
        {"{\"a\":5}", 0, "entry is not a JSON object"},
        {"{\"a\":[1]}", 0, "entry is not a JSON object"},
        {"{\"a\":{\"shape\":[1],\"data_offsets\":[0,4]}}", 4, "no \"dtype\""},
        {"{\"a\":{\"dtype\":\"F32\",\"data_offsets\":[0,4]}}", 4, "no \"shape\""},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1]}}", 4, "no \"data_offsets\""},
        {"{\"a\":{\"dtype\":5,\"shape\":[1],\"data_offsets\":[0,4]}}", 4, "\"dtype\" is not a string"},
        {"{\"a\":{\"dtype\":\"F99\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4, "unknown dtype \"F99\""},
        {"{\"a\":{\"dtype\":\"f32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4, "unknown dtype"},
        {"{\"a\":{\"dtype\":\"F8_E4M3\",\"shape\":[1],\"data_offsets\":[0,1]}}", 1, "unknown dtype"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":\"x\",\"data_offsets\":[0,4]}}", 4, "\"shape\" is not an array"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,4]}}", 4, "shape entry 0 is not a non-negative integer"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1,1.5],\"data_offsets\":[0,4]}}", 4, "shape entry 1 is not"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[\"1\"],\"data_offsets\":[0,4]}}", 4, "shape entry 0 is not"},
        {"{\"a\":{\"dtype\":\"U8\",\"shape\":[1,1,1,1,1,1,1,1,1],\"data_offsets\":[0,1]}}", 1, "more than the 8"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":\"x\"}}", 4, "not two non-negative integers"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0]}}", 4, "not two non-negative integers"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4,8]}}", 4, "not two non-negative integers"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,\"4\"]}}", 4, "not two non-negative integers"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4.0]}}", 4, "not two non-negative integers"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[-4,0]}}", 4, "not two non-negative integers"},
        {"{\"a\":{\"dtype\":\"U8\",\"shape\":[0],\"data_offsets\":[4,0]}}", 4, "begin > end"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]}}", 8, "beyond the data section"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,8]}}", 8, "needs 12"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[],\"data_offsets\":[0,8]}}", 8, "needs 4"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1099511627776,1099511627776],\"data_offsets\":[0,0]}}", 0, "element count overflows"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[4611686018427387904],\"data_offsets\":[0,0]}}", 0, "byte size"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}", 12, "overlaps"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},\"b\":{\"dtype\":\"U8\",\"shape\":[0],\"data_offsets\":[4,4]}}", 8, "overlaps"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[8,12]}}", 12, "gap"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}", 8, "gap"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 8, "4 trailing bytes"},
        {"{}", 1, "1 trailing bytes"},
        {"{\"__metadata__\":[]}", 0, "\"__metadata__\" is not a JSON object"},
        {"{\"__metadata__\":null}", 0, "\"__metadata__\" is not a JSON object"},
        {"{\"__metadata__\":{\"format\":1}}", 0, "value of 'format' is not a string"},
        {"{\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]},\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]}}", 1, "duplicate"},
        {"{\"a\\u0000b\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]}}", 1, "not valid JSON"},
        {"{\"\xff\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]}}", 1, "not valid JSON"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) expect_reject(cases[i].header, cases[i].data, cases[i].want);

    // a NUL byte inside the header
    size_t n;
    unsigned char *b = make_file("{}      ", 0, &n);
    b[10] = 0;
    expect_reject_bytes(b, n, "not valid JSON", "NUL in header");
    free(b);
}

static void test_rejects_bad_lengths(void) {
    unsigned char b[64] = {0};
    for (size_t n = 0; n < 8; n++) expect_reject_bytes(b, n, "shorter than the 8-byte", "short file");
    expect_reject_bytes(b, 16, "header length is 0", "zero header");
    memset(b, 0xff, 8);
    expect_reject_bytes(b, 16, "exceeds", "huge header length");
    uint64_t h = (uint64_t)ST_MAX_HEADER + 1;
    memcpy(b, &h, 8);
    expect_reject_bytes(b, 16, "exceeds", "header length limit + 1");
    h = 9;
    memcpy(b, &h, 8);
    memcpy(b + 8, "{}      ", 8);
    expect_reject_bytes(b, 16, "runs past the end", "header length past the end");
}

// Every proper prefix of a valid file, and the file plus one byte, must be rejected.
static void test_rejects_truncated_and_extended(void) {
    int64_t v[6] = {1, 2, 3, 4, 5, 6};
    uint8_t u[3] = {7, 8, 9};
    StEntry e[3] = {
        {.name = "a", .dtype = ST_I64, .ndim = 2, .shape = {2, 3}, .data = v},
        {.name = "b", .dtype = ST_U8, .ndim = 1, .shape = {3}, .data = u},
        {.name = "c", .dtype = ST_F32, .ndim = 1, .shape = {0}, .data = NULL},
    };
    char err[512];
    const char *path = tl_scratch_path("trunc.safetensors");
    EXPECT(st_save(path, e, 3, NULL, 0, err, sizeof(err)) == 0, "st_save: %s", err);
    size_t n;
    unsigned char *file = tl_read_file(path, &n);
    EXPECT(file && n > 8, "cannot read back %s", path);
    if (!file) return;
    SafeTensors st;
    EXPECT(st_parse(&st, file, n, err, sizeof(err)) == 0, "full file rejected: %s", err);
    st_free(&st);
    int accepted = 0;
    for (size_t len = 0; len < n; len++) {
        err[0] = 0;
        if (st_parse(&st, file, len, err, sizeof(err)) == 0) {
            accepted++;
            st_free(&st);
        } else if (!err[0]) {
            EXPECT(0, "prefix of %zu bytes rejected without a message", len);
        }
    }
    EXPECT(accepted == 0, "%d truncated copies of a %zu-byte file were accepted", accepted, n);
    unsigned char *longer = xcalloc(1, n + 1);
    memcpy(longer, file, n);
    expect_reject_bytes(longer, n + 1, "trailing", "one extra byte");
    free(longer);
    free(file);
}

// ---------------------------------------------------------------- round trips

static void test_roundtrip_all_dtypes(void) {
    float f32[6] = {1.5f, -2.0f, 0.0f, 3.25f, -0.0f, 1e-30f};
    uint16_t f16[5] = {0x3c00, 0xc000, 0x7bff, 0x0001, 0x7c00};
    uint16_t bf16[3] = {0x3f80, 0xc040, 0x0001};
    double f64[2] = {1.0 / 3.0, -1e300};
    int8_t i8[3] = {-128, 0, 127};
    uint8_t u8[4] = {0, 1, 254, 255};
    int16_t i16[4] = {-32768, -1, 1, 32767};
    int32_t i32[3] = {INT32_MIN, 0, INT32_MAX};
    int64_t i64 = INT64_MIN + 5;
    uint8_t b[3] = {0, 1, 1};
    float deep[4] = {1, 2, 3, 4};
    uint8_t one = 42;
    StEntry e[] = {
        {.name = "f32", .dtype = ST_F32, .ndim = 2, .shape = {2, 3}, .data = f32},
        {.name = "f16", .dtype = ST_F16, .ndim = 1, .shape = {5}, .data = f16},
        {.name = "bf16", .dtype = ST_BF16, .ndim = 3, .shape = {1, 1, 3}, .data = bf16},
        {.name = "f64", .dtype = ST_F64, .ndim = 1, .shape = {2}, .data = f64},
        {.name = "i8", .dtype = ST_I8, .ndim = 1, .shape = {3}, .data = i8},
        {.name = "u8", .dtype = ST_U8, .ndim = 2, .shape = {2, 2}, .data = u8},
        {.name = "i16", .dtype = ST_I16, .ndim = 1, .shape = {4}, .data = i16},
        {.name = "i32", .dtype = ST_I32, .ndim = 1, .shape = {3}, .data = i32},
        {.name = "scalar.i64", .dtype = ST_I64, .ndim = 0, .data = &i64},
        {.name = "bool", .dtype = ST_BOOL, .ndim = 1, .shape = {3}, .data = b},
        {.name = "empty", .dtype = ST_F32, .ndim = 3, .shape = {2, 0, 3}, .data = NULL},
        {.name = "empty1", .dtype = ST_U8, .ndim = 1, .shape = {0}, .data = NULL},
        {.name = "deep", .dtype = ST_F32, .ndim = 8, .shape = {1, 2, 1, 1, 1, 1, 2, 1}, .data = deep},
        {.name = "down_blocks.0.\xc3\xbc", .dtype = ST_U8, .ndim = 1, .shape = {1}, .data = &one},
    };
    int n = (int)(sizeof(e) / sizeof(e[0]));
    const char *meta[] = {"format", "pt", "config", "{\"a\": [1, 2]}", "\xc3\xbc", "\xc3\x9f"};
    char err[512];
    const char *path = tl_scratch_path("roundtrip.safetensors");
    EXPECT(st_save(path, e, n, meta, 3, err, sizeof(err)) == 0, "st_save: %s", err);

    SafeTensors st, so;
    EXPECT(st_load(&st, path, err, sizeof(err)) == 0, "st_load: %s", err);
    EXPECT(st_open(&so, path, err, sizeof(err)) == 0, "st_open: %s", err);
    if (tl_current_failed()) return;
    EXPECT(st.count == n && so.count == n, "count %d / %d, want %d", st.count, so.count, n);
    EXPECT(st.data_start % 8 == 0, "data section starts at %zu, not a multiple of 8", st.data_start);
    const char *h = (const char *)st.buf + 8;
    EXPECT(h[0] == '{', "header does not start with '{'");
    size_t hl = st.data_start - 8, end = hl;
    while (end > 0 && h[end - 1] == ' ') end--;
    EXPECT(end > 0 && h[end - 1] == '}' && hl - end < 8, "header padding: %zu spaces", hl - end);
    const char *mfirst = "\"__metadata__\":{\"format\":\"pt\"";
    EXPECT(memmem(h, hl, mfirst, strlen(mfirst)) == h + 1, "metadata not first / not compact");
    size_t offset = 0;
    for (int i = 0; i < n && i < st.count; i++) {
        const StTensor *t = &st.tensors[i];
        EXPECT(strcmp(t->name, e[i].name) == 0, "tensor %d is '%s', want '%s' (order kept)", i, t->name, e[i].name);
        EXPECT(t->dtype == e[i].dtype && t->ndim == e[i].ndim, "%s: dtype/ndim", e[i].name);
        EXPECT(memcmp(t->shape, e[i].shape, sizeof(int64_t) * (size_t)e[i].ndim) == 0, "%s: shape", e[i].name);
        size_t nb = st_dtype_size(e[i].dtype);
        for (int d = 0; d < e[i].ndim; d++) nb *= (size_t)e[i].shape[d];
        EXPECT(t->nbytes == nb && t->numel * st_dtype_size(t->dtype) == nb, "%s: %zu bytes, want %zu", e[i].name, t->nbytes, nb);
        EXPECT(t->offset == offset, "%s: at %zu, want %zu (contiguous in given order)", e[i].name, t->offset, offset);
        offset += nb;
        EXPECT(nb == 0 || memcmp(t->data, e[i].data, nb) == 0, "%s: bytes differ", e[i].name);
        EXPECT(st_find(&st, e[i].name) == t, "st_find(%s)", e[i].name);
        const StTensor *to = st_find(&so, e[i].name);
        EXPECT(to && !to->data && to->nbytes == nb, "st_open: %s", e[i].name);
        unsigned char buf[64];
        if (to && nb <= sizeof(buf)) {
            EXPECT(st_read_tensor(&so, to, buf, err, sizeof(err)) == 0, "st_read_tensor: %s", err);
            EXPECT(nb == 0 || memcmp(buf, e[i].data, nb) == 0, "st_read_tensor %s: bytes differ", e[i].name);
        }
    }
    EXPECT(st.tensors[8].numel == 1 && st.tensors[8].ndim == 0, "0-dim scalar has numel 1");
    EXPECT(st.tensors[10].numel == 0, "empty tensor has numel 0");
    EXPECT(st_find(&st, "nope") == NULL, "st_find of an absent name");
    EXPECT(st.meta_count == 3, "meta_count %d", st.meta_count);
    EXPECT(st_meta(&st, "format") && strcmp(st_meta(&st, "format"), "pt") == 0, "metadata format");
    EXPECT(st_meta(&st, "config") && strcmp(st_meta(&st, "config"), meta[3]) == 0, "metadata config");
    EXPECT(st_meta(&st, "\xc3\xbc") && strcmp(st_meta(&st, "\xc3\xbc"), "\xc3\x9f") == 0, "metadata utf-8");
    EXPECT(st_meta(&st, "absent") == NULL, "absent metadata key");
    st_free(&st);
    st_free(&so);
    st_free(&so);  // twice is harmless
    EXPECT(tl_count_tmp_files(tl_scratch_dir()) == 0, "temporary files left in %s", tl_scratch_dir());
}

static void test_save_rejects_bad_entries(void) {
    float x = 1;
    char err[512];
    StEntry dup[2] = {{.name = "a", .dtype = ST_F32, .ndim = 0, .data = &x}, {.name = "a", .dtype = ST_F32, .ndim = 0, .data = &x}};
    EXPECT(st_save(tl_scratch_path("bad.safetensors"), dup, 2, NULL, 0, err, sizeof(err)) == -1 && strstr(err, "appears twice"), "duplicate: %s", err);
    StEntry res = {.name = "__metadata__", .dtype = ST_F32, .ndim = 0, .data = &x};
    EXPECT(st_save(tl_scratch_path("bad.safetensors"), &res, 1, NULL, 0, err, sizeof(err)) == -1 && strstr(err, "reserved"), "reserved: %s", err);
    StEntry neg = {.name = "a", .dtype = ST_F32, .ndim = 1, .shape = {-1}, .data = &x};
    EXPECT(st_save(tl_scratch_path("bad.safetensors"), &neg, 1, NULL, 0, err, sizeof(err)) == -1 && strstr(err, "negative"), "negative: %s", err);
    StEntry nodata = {.name = "a", .dtype = ST_F32, .ndim = 1, .shape = {2}, .data = NULL};
    EXPECT(st_save(tl_scratch_path("bad.safetensors"), &nodata, 1, NULL, 0, err, sizeof(err)) == -1 && strstr(err, "no data"), "no data: %s", err);
    const char *kv[] = {"k", "v", "k", "w"};
    EXPECT(st_save(tl_scratch_path("bad.safetensors"), NULL, 0, kv, 2, err, sizeof(err)) == -1 && strstr(err, "duplicate"), "meta dup: %s", err);
    EXPECT(st_save(tl_scratch_path("no/such/folder/x.safetensors"), NULL, 0, NULL, 0, err, sizeof(err)) == -1 &&
               strstr(err, "no/such/folder/x.safetensors"), "missing folder: %s", err);
    EXPECT(access(tl_scratch_path("bad.safetensors"), F_OK) != 0, "a rejected save left a file");
    EXPECT(tl_count_tmp_files(tl_scratch_dir()) == 0, "temporary files left behind");
}

// ---------------------------------------------------------------- conversion

// Reference half -> float by arithmetic, independent of the bit manipulation under test.
static double half_ref(uint16_t h) {
    int s = h >> 15, e = (h >> 10) & 31, m = h & 1023;
    double v = e == 0 ? ldexp(m, -24) : e == 31 ? (m ? NAN : INFINITY) : ldexp(1024 + m, e - 25);
    return s ? -v : v;
}

static void test_f16_bf16_conversion(void) {
    static uint16_t all[65536];
    static float out[65536];
    for (int i = 0; i < 65536; i++) all[i] = (uint16_t)i;
    st_bytes_to_f32(out, all, ST_F16, 65536);
    int bad = 0;
    for (int i = 0; i < 65536; i++) {
        double r = half_ref((uint16_t)i);
        int ok = !!signbit(out[i]) == (i >> 15) && (isnan(r) ? isnan(out[i]) : (double)out[i] == r);
        if (!ok && bad++ < 5) printf("  f16 0x%04x -> %.9g, want %.9g\n", i, (double)out[i], r);
    }
    EXPECT(bad == 0, "%d of 65536 half values converted wrongly", bad);
    // spot values, spelled out
    uint16_t h[] = {0x3c00, 0xc000, 0x3555, 0x7bff, 0x0400, 0x0001, 0x03ff, 0x8001, 0x0200};
    float want[] = {1.0f, -2.0f, 0.333251953125f, 65504.0f, 0x1p-14f, 0x1p-24f, 1023 * 0x1p-24f, -0x1p-24f, 0x1p-15f};
    float got[9];
    st_bytes_to_f32(got, h, ST_F16, 9);
    EXPECT_CLOSE("f16 spot values", got, want, 9, 0, 0);
    uint16_t sp[] = {0x7c00, 0xfc00, 0x7e00, 0x7c01, 0x8000};
    st_bytes_to_f32(got, sp, ST_F16, 5);
    EXPECT(isinf(got[0]) && got[0] > 0 && isinf(got[1]) && got[1] < 0, "f16 +-inf");
    EXPECT(isnan(got[2]) && isnan(got[3]), "f16 nan (quiet and signalling payload)");
    EXPECT(got[4] == 0 && signbit(got[4]), "f16 -0");

    uint16_t bf[] = {0x3f80, 0xc040, 0x4049, 0x0001, 0x7f80, 0xff80, 0x7fc0, 0x8000};
    st_bytes_to_f32(got, bf, ST_BF16, 8);
    float bw[] = {1.0f, -3.0f, 3.140625f, 0x1p-133f};
    EXPECT_CLOSE("bf16 values", got, bw, 4, 0, 0);
    EXPECT(isinf(got[4]) && got[4] > 0 && isinf(got[5]) && got[5] < 0 && isnan(got[6]), "bf16 inf/nan");
    EXPECT(got[7] == 0 && signbit(got[7]), "bf16 -0");
}

static void test_int_and_f64_conversion(void) {
    int8_t i8[3] = {-128, 0, 127};
    uint8_t u8[2] = {0, 255};
    int16_t i16[2] = {-32768, 32767};
    int32_t i32[2] = {INT32_MIN, 16777217};
    int64_t i64[2] = {-((int64_t)1 << 40), INT64_MAX};
    uint8_t b[3] = {0, 1, 2};
    double f64[3] = {1.5, 1e-50, -1e300};
    float got[3];
    st_bytes_to_f32(got, i8, ST_I8, 3);
    EXPECT(got[0] == -128 && got[1] == 0 && got[2] == 127, "I8");
    st_bytes_to_f32(got, u8, ST_U8, 2);
    EXPECT(got[0] == 0 && got[1] == 255, "U8");
    st_bytes_to_f32(got, i16, ST_I16, 2);
    EXPECT(got[0] == -32768 && got[1] == 32767, "I16");
    st_bytes_to_f32(got, i32, ST_I32, 2);
    EXPECT(got[0] == -2147483648.0f && got[1] == 16777216.0f, "I32");
    st_bytes_to_f32(got, i64, ST_I64, 2);
    EXPECT(got[0] == -0x1p40f && got[1] == 0x1p63f, "I64");
    st_bytes_to_f32(got, b, ST_BOOL, 3);
    EXPECT(got[0] == 0 && got[1] == 1 && got[2] == 1, "BOOL");
    st_bytes_to_f32(got, f64, ST_F64, 3);
    EXPECT(got[0] == 1.5f && got[1] == 0 && isinf(got[2]) && got[2] < 0, "F64");
    // st_to_f32 on a tensor whose data sits at an odd address
    unsigned char raw[1 + 8];
    float two[2] = {0.5f, -4.0f};
    memcpy(raw + 1, two, 8);
    StTensor t = {.name = "t", .dtype = ST_F32, .ndim = 1, .shape = {2}, .numel = 2, .nbytes = 8, .data = raw + 1};
    st_to_f32(got, &t);
    EXPECT(got[0] == 0.5f && got[1] == -4.0f, "unaligned F32");
}

// ---------------------------------------------------------------- files from elsewhere

static void test_corpus(void) {
    const char *dir = getenv("DOPPEL_ST_CORPUS") ? getenv("DOPPEL_ST_CORPUS") : "tests/corpus/safetensors";
    DIR *d = opendir(dir);
    if (!d) {
        EXPECT(0, "cannot open corpus %s (run from the repository root)", dir);
        return;
    }
    int n_ok = 0, n_bad = 0;
    for (struct dirent *e; (e = readdir(d));) {
        size_t len = strlen(e->d_name);
        if (len < 12 || strcmp(e->d_name + len - 12, ".safetensors") != 0) continue;
        char path[1024], err[1024] = "";
        snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
        SafeTensors st;
        int rc = st_load(&st, path, err, sizeof(err));
        if (strncmp(e->d_name, "ok_", 3) == 0) {
            n_ok++;
            EXPECT(rc == 0, "%s rejected: %s", path, err);
            for (int i = 0; rc == 0 && i < st.count; i++) {
                float *f = xmalloc(st.tensors[i].numel * sizeof(float));
                st_to_f32(f, &st.tensors[i]);
                free(f);
            }
            if (rc == 0) st_free(&st);
        } else {
            n_bad++;
            char prefix[1100];
            snprintf(prefix, sizeof(prefix), "file %s: ", path);
            EXPECT(rc == -1, "%s accepted, want rejection", path);
            EXPECT(strncmp(err, prefix, strlen(prefix)) == 0 && strlen(err) > strlen(prefix) + 10, "%s: message '%s'", path, err);
            if (rc == 0) st_free(&st);
            rc = st_open(&st, path, err, sizeof(err));
            EXPECT(rc == -1, "%s accepted by st_open", path);
            if (rc == 0) st_free(&st);
        }
    }
    closedir(d);
    printf("  corpus: %d valid, %d malformed files\n", n_ok, n_bad);
    EXPECT(n_ok >= 2 && n_bad >= 10, "corpus %s too small (%d ok, %d bad); regenerate with make_corpus.py", dir, n_ok, n_bad);
}

// The reference fixtures were written by Python's safetensors: every one must load both ways.
static void test_reads_python_written_files(void) {
    DIR *d = opendir(fx_dir());
    if (!d) {
        tl_skip("no fixtures in %s", fx_dir());
        return;
    }
    int n = 0;
    for (struct dirent *e; (e = readdir(d));) {
        size_t len = strlen(e->d_name);
        if (len < 12 || strcmp(e->d_name + len - 12, ".safetensors") != 0) continue;
        char path[1024], err[1024];
        snprintf(path, sizeof(path), "%s/%s", fx_dir(), e->d_name);
        SafeTensors st, so;
        int a = st_load(&st, path, err, sizeof(err));
        EXPECT(a == 0, "%s", err);
        int b = st_open(&so, path, err, sizeof(err));
        EXPECT(b == 0, "%s", err);
        if (a == 0 && b == 0) {
            EXPECT(st.count == so.count, "%s: counts differ", path);
            for (int i = 0; i < st.count; i++) {
                const StTensor *t = &st.tensors[i], *u = st_find(&so, t->name);
                unsigned char *buf = xmalloc(t->nbytes);
                EXPECT(u && st_read_tensor(&so, u, buf, err, sizeof(err)) == 0 && memcmp(buf, t->data, t->nbytes) == 0,
                       "%s: tensor %s differs between st_load and st_open", path, t->name);
                free(buf);
            }
            n++;
        }
        if (a == 0) st_free(&st);
        if (b == 0) st_free(&so);
    }
    closedir(d);
    printf("  read %d Python-written fixture files\n", n);
}

static void test_load_errors_name_the_path(void) {
    SafeTensors st;
    char err[512];
    const char *p = tl_scratch_path("does-not-exist.safetensors");
    EXPECT(st_load(&st, p, err, sizeof(err)) == -1 && strstr(err, p) && strstr(err, "cannot open"), "missing: %s", err);
    EXPECT(st_open(&st, p, err, sizeof(err)) == -1 && strstr(err, p), "missing (st_open): %s", err);
    EXPECT(st_load(&st, tl_scratch_dir(), err, sizeof(err)) == -1 && strstr(err, "is a folder"), "folder: %s", err);
    const char *e = tl_scratch_path("empty.safetensors");
    EXPECT(write_file_atomic(e, "", 0, err, sizeof(err)) == 0, "%s", err);
    EXPECT(st_load(&st, e, err, sizeof(err)) == -1 && strstr(err, e) && strstr(err, "shorter than"), "empty: %s", err);
    EXPECT(st_open(&st, e, err, sizeof(err)) == -1 && strstr(err, "shorter than"), "empty (st_open): %s", err);
}

// ---------------------------------------------------------------- atomic files

static void test_atomic_write(void) {
    char err[512], p[512];
    snprintf(p, sizeof(p), "%s", tl_scratch_path("atomic.txt"));
    EXPECT(write_file_atomic(p, "old", 3, err, sizeof(err)) == 0, "%s", err);
    EXPECT(write_file_atomic(p, "new!", 4, err, sizeof(err)) == 0, "%s", err);
    size_t n = 0;
    unsigned char *b = tl_read_file(p, &n);
    EXPECT(b && n == 4 && memcmp(b, "new!", 4) == 0, "overwrite did not replace the contents");
    free(b);
    // rename over a folder fails: the temporary file must be gone afterwards
    const char *dirp = tl_scratch_path("a-folder");
    EXPECT(mkdir_p(dirp, err, sizeof(err)) == 0, "%s", err);
    EXPECT(write_file_atomic(dirp, "x", 1, err, sizeof(err)) == -1 && strstr(err, "renaming"), "rename over a folder: %s", err);
    EXPECT(write_file_atomic(tl_scratch_path("missing/x.txt"), "x", 1, err, sizeof(err)) == -1 && strstr(err, "missing/x.txt"), "missing folder: %s", err);
    EXPECT(tl_count_tmp_files(tl_scratch_dir()) == 0, "temporary file left behind after a failed write");
    AtomicFile af;
    EXPECT(atomic_open(&af, tl_scratch_path("aborted.txt"), err, sizeof(err)) == 0, "%s", err);
    EXPECT(atomic_write(&af, "abc", 3, err, sizeof(err)) == 0, "%s", err);
    atomic_abort(&af);
    atomic_abort(&af);
    EXPECT(access(tl_scratch_path("aborted.txt"), F_OK) != 0 && tl_count_tmp_files(tl_scratch_dir()) == 0, "abort left a file");
    // mkdir_p: nested, existing, trailing and doubled slashes, through a regular file
    EXPECT(mkdir_p(tl_scratch_path("x//y/z/"), err, sizeof(err)) == 0, "%s", err);
    EXPECT(mkdir_p(tl_scratch_path("x/y/z"), err, sizeof(err)) == 0, "%s", err);
    struct stat sb;
    EXPECT(stat(tl_scratch_path("x/y/z"), &sb) == 0 && S_ISDIR(sb.st_mode), "mkdir_p did not create x/y/z");
    EXPECT(mkdir_p(tl_scratch_path("atomic.txt/sub"), err, sizeof(err)) == -1 && strstr(err, "atomic.txt"), "through a file: %s", err);
    EXPECT(mkdir_p(p, err, sizeof(err)) == -1 && strstr(err, "not a folder"), "over a file: %s", err);
}

// ---------------------------------------------------------------- checkpoints

// A model-like ParamSet. variant 1: one extra parameter; 2: norm.weight missing;
// 3: norm.weight shaped [9]; 4: fifteen extra parameters.
static void declare_small(ParamSet *ps, int variant) {
    memset(ps, 0, sizeof(*ps));
    params_declare(ps, INIT_NORMAL, 0.1f, (int64_t[]){8, 3, 3, 3, 0}, "conv_in.weight");
    params_declare(ps, INIT_ZEROS, 0, (int64_t[]){8, 0}, "conv_in.bias");
    if (variant != 2) params_declare(ps, INIT_ONES, 0, (int64_t[]){variant == 3 ? 9 : 8, 0}, "norm.weight");
    params_declare(ps, INIT_NORMAL, 0.1f, (int64_t[]){8, 8, 0}, "mid_block.attentions.0.to_q.weight");
    params_declare(ps, INIT_NORMAL, 0.1f, (int64_t[]){16, 8, 0}, "time_embedding.linear_1.weight");
    params_declare(ps, INIT_ONES, 0, (int64_t[]){0}, "scale");  // 0-dim
    if (variant == 1) params_declare(ps, INIT_ZEROS, 0, (int64_t[]){4, 0}, "extra.weight");
    for (int i = 0; variant == 4 && i < 15; i++) params_declare(ps, INIT_ZEROS, 0, (int64_t[]){2, 0}, "extra.%d.weight", i);
    params_allocate(ps);
}

static int views_equal(const ParamSet *ps, const float *a, const float *b, const char *what) {
    for (int i = 0; i < ps->count; i++) {
        const ParamInfo *p = &ps->info[i];
        if (memcmp(a + p->offset, b + p->offset, p->numel * sizeof(float)) != 0) {
            tl_fail(__FILE__, __LINE__, "%s: %s differs", what, p->name);
            return 0;
        }
    }
    return 1;
}

static void test_checkpoint_model_roundtrip(void) {
    ParamSet ps, ps2;
    declare_small(&ps, 0);
    declare_small(&ps2, 0);
    fill_randn(ps.data, ps.total, 1, 1.0f);
    ps.ema = xmalloc(ps.total * sizeof(float));
    fill_randn(ps.ema, ps.total, 2, 1.0f);
    json_t *config = json_pack("{s:s, s:i, s:[i,i], s:f, s:{s:s}}", "_class_name", "UNet2DModel", "sample_size", 16,
                               "block_out_channels", 32, 64, "scaling_factor", 0.18215, "doppel", "preset", "tiny");
    char err[1024];
    const char *dir = tl_scratch_path("runs/a/unet");  // nested: mkdir -p
    EXPECT(checkpoint_save_model(dir, &ps, ps.data, config, err, sizeof(err)) == 0, "save: %s", err);
    EXPECT(checkpoint_load_model(dir, &ps2, err, sizeof(err)) == 0, "load: %s", err);
    views_equal(&ps, ps.data, ps2.data, "weights after a round trip");

    json_t *loaded = checkpoint_load_config(dir, err, sizeof(err));
    EXPECT(loaded && json_equal(loaded, config), "config round trip: %s", loaded ? "differs" : err);
    json_decref(loaded);
    char path[600];
    snprintf(path, sizeof(path), "%s/%s", dir, CKPT_CONFIG);
    size_t n = 0;
    unsigned char *text = tl_read_file(path, &n);
    EXPECT(text && n > 2 && text[n - 1] == '\n' && memmem(text, n, "{\n  \"_class_name\": \"UNet2DModel\",\n", 34) == (void *)text,
           "config.json is not diffusers-style (indent 2, sorted keys, trailing newline)");
    free(text);

    snprintf(path, sizeof(path), "%s/%s", dir, CKPT_WEIGHTS);
    SafeTensors st;
    EXPECT(st_load(&st, path, err, sizeof(err)) == 0, "%s", err);
    if (!tl_current_failed()) {
        EXPECT(st.count == ps.count, "%d tensors, want %d", st.count, ps.count);
        EXPECT(st_meta(&st, "format") && strcmp(st_meta(&st, "format"), "pt") == 0, "metadata format=pt");
        for (int i = 0; i < st.count && i < ps.count; i++)
            EXPECT(strcmp(st.tensors[i].name, ps.info[i].name) == 0 && st.tensors[i].dtype == ST_F32 && st.tensors[i].ndim == ps.info[i].ndim,
                   "tensor %d: %s", i, st.tensors[i].name);
        const StTensor *s = st_find(&st, "scale");
        EXPECT(s && s->ndim == 0 && s->numel == 1, "0-dim parameter saved as a 0-dim tensor");
        st_free(&st);
    }

    // EMA weights go out through the same call
    const char *edir = tl_scratch_path("runs/a/unet_ema");
    EXPECT(checkpoint_save_model(edir, &ps, ps.ema, config, err, sizeof(err)) == 0, "save ema: %s", err);
    EXPECT(checkpoint_load_model(edir, &ps2, err, sizeof(err)) == 0, "load ema: %s", err);
    views_equal(&ps, ps.ema, ps2.data, "ema weights after a round trip");
    EXPECT(tl_count_tmp_files(dir) == 0 && tl_count_tmp_files(edir) == 0, "temporary files left in the model folder");

    json_t *arr = json_array();
    EXPECT(checkpoint_save_model(tl_scratch_path("bad"), &ps, ps.data, arr, err, sizeof(err)) == -1 && strstr(err, "JSON object"), "config not an object: %s", err);
    json_decref(arr);
    json_decref(config);
    params_free(&ps);
    params_free(&ps2);
}

static void test_checkpoint_half_precision_weights(void) {
    ParamSet ps;
    declare_small(&ps, 0);
    StEntry *e = xcalloc((size_t)ps.count, sizeof(StEntry));
    uint16_t *bits = xmalloc(ps.total * sizeof(uint16_t));
    Rng r;
    rng_seed(&r, 7);
    for (size_t i = 0; i < ps.total; i++) bits[i] = (uint16_t)(rng_u64(&r) & 0x7bff);  // finite, either sign bit off
    for (int i = 0; i < ps.count; i++) {
        e[i] = (StEntry){.name = ps.info[i].name, .dtype = i % 2 ? ST_BF16 : ST_F16, .ndim = ps.info[i].ndim, .data = bits + ps.info[i].offset};
        memcpy(e[i].shape, ps.info[i].shape, sizeof(e[i].shape));
    }
    char err[1024];
    const char *path = tl_scratch_path("half.safetensors");
    EXPECT(st_save(path, e, ps.count, NULL, 0, err, sizeof(err)) == 0, "%s", err);
    EXPECT(checkpoint_load_weights(path, &ps, ps.data, err, sizeof(err)) == 0, "load half: %s", err);
    float *want = xmalloc(ps.total * sizeof(float));
    for (int i = 0; i < ps.count; i++)
        st_bytes_to_f32(want + ps.info[i].offset, bits + ps.info[i].offset, e[i].dtype, ps.info[i].numel);
    views_equal(&ps, ps.data, want, "F16/BF16 weights converted");
    for (int i = 0; i < ps.count; i++) e[i].dtype = ST_I16;
    EXPECT(st_save(path, e, ps.count, NULL, 0, err, sizeof(err)) == 0, "%s", err);
    EXPECT(checkpoint_load_weights(path, &ps, ps.data, err, sizeof(err)) == -1 && strstr(err, "dtype I16"), "I16 weights: %s", err);
    free(want);
    free(bits);
    free(e);
    params_free(&ps);
}

static void expect_load_error(int variant, const char *dir, const char *want1, const char *want2) {
    ParamSet ps;
    declare_small(&ps, variant);
    char err[2048] = "";
    EXPECT(checkpoint_load_model(dir, &ps, err, sizeof(err)) == -1, "variant %d loaded", variant);
    EXPECT(strstr(err, want1) && strstr(err, want2), "variant %d: '%s' lacks '%s' / '%s'", variant, err, want1, want2);
    params_free(&ps);
}

static void test_checkpoint_mismatch_errors(void) {
    ParamSet ps;
    declare_small(&ps, 0);
    json_t *config = json_object();
    char err[1024];
    const char *dir = tl_scratch_path("mismatch");
    EXPECT(checkpoint_save_model(dir, &ps, ps.data, config, err, sizeof(err)) == 0, "%s", err);
    expect_load_error(1, dir, "1 missing [extra.weight]", "0 unexpected");
    expect_load_error(2, dir, "0 missing", "1 unexpected [norm.weight]");
    expect_load_error(3, dir, "'norm.weight' has shape [8]", "expects [9]");
    expect_load_error(4, dir, "15 missing [extra.0.weight, extra.1.weight", "... and 5 more");
    expect_load_error(0, tl_scratch_path("nowhere"), "nowhere/diffusion_pytorch_model.safetensors", "cannot open");

    EXPECT(checkpoint_load_config(tl_scratch_path("nowhere"), err, sizeof(err)) == NULL && strstr(err, "no config.json"), "missing config: %s", err);
    char path[600];
    snprintf(path, sizeof(path), "%s/config.json", dir);
    EXPECT(write_file_atomic(path, "[1]\n", 4, err, sizeof(err)) == 0, "%s", err);
    EXPECT(checkpoint_load_config(dir, err, sizeof(err)) == NULL && strstr(err, "not a JSON object"), "array config: %s", err);
    EXPECT(write_file_atomic(path, "{\"a\": 1,}", 9, err, sizeof(err)) == 0, "%s", err);
    EXPECT(checkpoint_load_config(dir, err, sizeof(err)) == NULL && strstr(err, "not valid JSON") && strstr(err, path), "bad config: %s", err);
    EXPECT(write_file_atomic(path, "{\"a\": 1, \"a\": 2}", 16, err, sizeof(err)) == 0, "%s", err);
    EXPECT(checkpoint_load_config(dir, err, sizeof(err)) == NULL && strstr(err, "duplicate"), "duplicate key: %s", err);
    json_decref(config);
    params_free(&ps);
}

static void alloc_state(ParamSet *ps, int m, int v, int ema) {
    if (m) ps->m = xcalloc(ps->total, sizeof(float));
    if (v) ps->v = xcalloc(ps->total, sizeof(float));
    if (ema) ps->ema = xcalloc(ps->total, sizeof(float));
}

static void test_training_state_roundtrip(void) {
    ParamSet ps, ps2, ps3;
    declare_small(&ps, 0);
    declare_small(&ps2, 0);
    declare_small(&ps3, 0);
    alloc_state(&ps, 1, 1, 1);
    alloc_state(&ps2, 1, 1, 1);
    alloc_state(&ps3, 1, 1, 1);
    fill_randn(ps.m, ps.total, 11, 1e-3f);
    fill_randn(ps.v, ps.total, 12, 1e-6f);
    fill_randn(ps.ema, ps.total, 13, 1.0f);
    TrainMeta meta = {.step = 123456789012LL}, got = {0};
    rng_seed(&meta.rng, 42);
    for (int i = 0; i < 7; i++) rng_u64(&meta.rng);
    (void)rng_normal(&meta.rng);  // leaves a cached spare normal
    EXPECT(meta.rng.has_spare, "rng should hold a spare");
    char err[1024];
    const char *dir = tl_scratch_path("state");
    EXPECT(checkpoint_save_state(dir, &ps, &meta, err, sizeof(err)) == 0, "save: %s", err);
    EXPECT(checkpoint_load_state(dir, &ps2, &got, err, sizeof(err)) == 0, "load: %s", err);
    views_equal(&ps, ps.m, ps2.m, "exp_avg");
    views_equal(&ps, ps.v, ps2.v, "exp_avg_sq");
    views_equal(&ps, ps.ema, ps2.ema, "ema");
    EXPECT(got.step == meta.step, "step %lld, want %lld", (long long)got.step, (long long)meta.step);
    EXPECT(memcmp(got.rng.s, meta.rng.s, sizeof(meta.rng.s)) == 0 && got.rng.has_spare == 1 &&
               memcmp(&got.rng.spare, &meta.rng.spare, sizeof(float)) == 0, "rng state differs");
    int same = 1;
    for (int i = 0; i < 1000; i++) {
        float a = rng_normal(&meta.rng), b = rng_normal(&got.rng);
        same &= memcmp(&a, &b, sizeof(a)) == 0 && rng_u64(&meta.rng) == rng_u64(&got.rng);
    }
    EXPECT(same, "the restored rng does not continue identically");

    // without a spare; a ParamSet without EMA ignores the file's ema.*
    meta.rng.has_spare = 0;
    meta.step = 0;
    EXPECT(checkpoint_save_state(dir, &ps, &meta, err, sizeof(err)) == 0, "save: %s", err);
    free(ps3.ema);
    ps3.ema = NULL;
    EXPECT(checkpoint_load_state(dir, &ps3, &got, err, sizeof(err)) == 0, "load without ema: %s", err);
    EXPECT(got.step == 0 && got.rng.has_spare == 0 && rng_u64(&got.rng) == rng_u64(&meta.rng), "second state");
    views_equal(&ps, ps.m, ps3.m, "exp_avg (second)");

    // a state saved without EMA cannot fill an EMA buffer
    EXPECT(checkpoint_save_state(dir, &ps3, &meta, err, sizeof(err)) == 0, "save: %s", err);
    EXPECT(checkpoint_load_state(dir, &ps2, &got, err, sizeof(err)) == -1 && strstr(err, "missing [ema.conv_in.weight"), "lacks ema: %s", err);
    // a different model
    ParamSet other;
    declare_small(&other, 3);
    alloc_state(&other, 1, 1, 0);
    EXPECT(checkpoint_load_state(dir, &other, &got, err, sizeof(err)) == -1 && strstr(err, "norm.weight") && strstr(err, "shape"), "shape: %s", err);
    // an all-zero generator state is refused
    TrainMeta zero = {0};
    EXPECT(checkpoint_save_state(dir, &ps3, &zero, err, sizeof(err)) == 0, "save: %s", err);
    EXPECT(checkpoint_load_state(dir, &ps3, &got, err, sizeof(err)) == -1 && strstr(err, "all zeros"), "zero rng: %s", err);
    EXPECT(checkpoint_load_state(tl_scratch_path("nowhere"), &ps3, &got, err, sizeof(err)) == -1 && strstr(err, "training_state.safetensors"), "missing: %s", err);
    EXPECT(tl_count_tmp_files(dir) == 0, "temporary files left in the state folder");
    params_free(&ps);
    params_free(&ps2);
    params_free(&ps3);
    params_free(&other);
}

int main(void) {
    RUN(test_rejects_malformed_headers);
    RUN(test_rejects_bad_lengths);
    RUN(test_rejects_truncated_and_extended);
    RUN(test_roundtrip_all_dtypes);
    RUN(test_save_rejects_bad_entries);
    RUN(test_f16_bf16_conversion);
    RUN(test_int_and_f64_conversion);
    RUN(test_corpus);
    RUN(test_reads_python_written_files);
    RUN(test_load_errors_name_the_path);
    RUN(test_atomic_write);
    RUN(test_checkpoint_model_roundtrip);
    RUN(test_checkpoint_half_precision_weights);
    RUN(test_checkpoint_mismatch_errors);
    RUN(test_training_state_roundtrip);
    return tl_finish();
}

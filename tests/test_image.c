// test_image.c: the image readers and writer (every PNG colour type and bit depth, JPEG, BMP, a
// corpus of malformed files), resizing (exact box means, torch's bilinear, constant images), and
// the colour maps (matplotlib's tables, inversion on clean, 8-bit and JPEG-compressed renders, and
// on the real gait10 spectrograms when ../shared/data/gait10 or $DOPPEL_GAIT10 is there).
// The corpus files are written by tests/corpus/images/make_images.py from the same formulas as
// pattern8/pattern16/palette_rgb below.
#include <dirent.h>
#include <ftw.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <jpeglib.h>

#include "check.h"
#include "image/image.h"
#include "rng.h"
#include "testlib.h"

static const char *corpus_dir(void) {
    const char *d = getenv("DOPPEL_IMAGE_CORPUS");
    return d ? d : "tests/corpus/images";
}

static char *corpus(const char *name) {
    static char buf[4][1024];
    static int k;
    char *p = buf[k++ % 4];
    snprintf(p, 1024, "%s/%s", corpus_dir(), name);
    return p;
}

static int is_zeroed(const Image *im) { return im->C == 0 && im->H == 0 && im->W == 0 && im->data == NULL && im->bits == 0; }

static double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec * 1e-6;
}

static float *px(const Image *im, int c, int y, int x) { return im->data + ((size_t)c * (size_t)im->H + (size_t)y) * (size_t)im->W + (size_t)x; }

// ---------------------------------------------------------------- the corpus formulas (make_images.py)

static int pattern8(int x, int y, int c) { return (x * 40 + y * 25 + c * 80 + 13) % 256; }
static int pattern16(int x, int y, int c) { return (x * 9001 + y * 4099 + c * 21011 + 77) % 65536; }
static int palette_rgb(int i, int c) { return c == 0 ? (i * 16) % 256 : c == 1 ? 255 - (i * 16) % 256 : (i * 77) % 256; }

// the value a reader produces for an 8- or 16-bit sample k
static float s8(int k) { return (float)k * (1.0f / 255.0f); }
static float s16(int k) { return (float)k * (1.0f / 65535.0f); }

static float f_gray1(int x, int y, int c) { return s8((x + y) % 2 * 255); }
static float f_gray2(int x, int y, int c) { return s8((x + 2 * y) % 4 * 85); }
static float f_gray4(int x, int y, int c) { return s8((x + 3 * y) % 16 * 17); }
static float f_p8(int x, int y, int c) { return s8(pattern8(x, y, c)); }
static float f_p16(int x, int y, int c) { return s16(pattern16(x, y, c)); }
static float f_pal4(int x, int y, int c) { return s8(palette_rgb((x + 3 * y) % 16, c)); }
static float f_pal8(int x, int y, int c) { return s8(palette_rgb((x * 31 + y * 7) % 256, c)); }
static float f_bmpgray(int x, int y, int c) { return s8((x * 9 + y * 5) % 64 * 4); }

typedef struct {
    const char *file;
    int C, H, W, bits;
    float (*f)(int x, int y, int c);
} Expected;

// Reads the file and compares every sample exactly.
static void expect_file(const Expected *e) {
    Image im;
    char err[1024] = "";
    const char *path = corpus(e->file);
    if (image_read(path, &im, err, sizeof(err)) != 0) {
        EXPECT(0, "%s rejected: %s", path, err);
        return;
    }
    EXPECT(im.C == e->C && im.H == e->H && im.W == e->W && im.bits == e->bits, "%s: got (%d, %d, %d) %d-bit, want (%d, %d, %d) %d-bit",
           e->file, im.C, im.H, im.W, im.bits, e->C, e->H, e->W, e->bits);
    if (im.C == e->C && im.H == e->H && im.W == e->W) {
        size_t n = (size_t)e->C * (size_t)e->H * (size_t)e->W;
        float *want = xmalloc(n * sizeof(float));
        for (int c = 0; c < e->C; c++)
            for (int y = 0; y < e->H; y++)
                for (int x = 0; x < e->W; x++) want[((size_t)c * (size_t)e->H + (size_t)y) * (size_t)e->W + (size_t)x] = e->f(x, y, c);
        EXPECT_CLOSE(e->file, im.data, want, n, 0, 0);
        free(want);
    }
    image_free(&im);
    EXPECT(is_zeroed(&im), "image_free leaves the Image zeroed");
}

// ---------------------------------------------------------------- PNG

static void test_png_variants(void) {
    static const Expected cases[] = {
        {"ok_gray1.png", 1, 5, 11, 8, f_gray1},
        {"ok_gray2.png", 1, 5, 7, 8, f_gray2},
        {"ok_gray4.png", 1, 5, 7, 8, f_gray4},
        {"ok_gray8.png", 1, 5, 7, 8, f_p8},
        {"ok_gray16.png", 1, 5, 7, 16, f_p16},
        {"ok_rgb8.png", 3, 5, 7, 8, f_p8},
        {"ok_rgb16.png", 3, 5, 7, 16, f_p16},
        {"ok_gray_alpha8.png", 1, 5, 7, 8, f_p8},
        {"ok_gray_alpha16.png", 1, 5, 7, 16, f_p16},
        {"ok_rgba8.png", 3, 5, 7, 8, f_p8},
        {"ok_rgba16.png", 3, 5, 7, 16, f_p16},
        {"ok_palette4.png", 3, 5, 7, 8, f_pal4},
        {"ok_palette8.png", 3, 5, 7, 8, f_pal8},
        {"ok_interlaced_rgb8.png", 3, 11, 13, 8, f_p8},
        {"ok_interlaced_gray16.png", 1, 11, 13, 16, f_p16},
        {"ok_interlaced_gray1.png", 1, 11, 13, 8, f_gray1},
        {"ok_chunks.png", 1, 5, 7, 8, f_p8},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) expect_file(&cases[i]);
}

// an image with sample values k / 255 (8-bit) or k / 65535 (16-bit) from a seeded generator
static void fill_levels(Image *im, int bits, unsigned long long seed) {
    Rng r;
    rng_seed(&r, seed);
    size_t n = (size_t)im->C * (size_t)im->H * (size_t)im->W;
    for (size_t i = 0; i < n; i++) im->data[i] = bits == 16 ? s16((int)rng_below(&r, 65536)) : s8((int)rng_below(&r, 256));
    if (n >= 2) im->data[0] = 0, im->data[n - 1] = 1;  // the extremes
}

static void roundtrip(int C, int H, int W, int bits, int random_values) {
    Image im, back;
    char err[1024], what[96];
    EXPECT(image_alloc(&im, C, H, W) == 0, "image_alloc(%d, %d, %d)", C, H, W);
    if (random_values) fill_randn(im.data, (size_t)C * H * W, 99, 0.3f);
    else fill_levels(&im, bits, (unsigned long long)(C * 1000 + H * 10 + W));
    if (random_values)
        for (size_t i = 0; i < (size_t)C * H * W; i++) im.data[i] = fabsf(im.data[i]) > 1 ? 1 : fabsf(im.data[i]);
    const char *path = tl_scratch_path("rt.png");
    EXPECT(image_write_png(path, &im, bits, NULL, err, sizeof(err)) == 0, "write: %s", err);
    EXPECT(image_read(path, &back, err, sizeof(err)) == 0, "read back: %s", err);
    snprintf(what, sizeof(what), "png %d-bit C=%d %dx%d%s", bits, C, W, H, random_values ? " random" : " levels");
    if (!tl_current_failed()) {
        EXPECT(back.C == C && back.H == H && back.W == W && back.bits == bits, "%s: shape/bits", what);
        // levels come back exactly; arbitrary values within half a quantisation step
        double tol = random_values ? 0.5 / (bits == 16 ? 65535.0 : 255.0) + 1e-7 : 0;
        if (back.C == C && back.H == H && back.W == W) EXPECT_CLOSE(what, back.data, im.data, (size_t)C * H * W, tol, 0);
    }
    image_free(&back);
    image_free(&im);
}

static void test_png_roundtrip(void) {
    int sizes[][2] = {{1, 1}, {5, 7}, {3, 64}, {33, 17}};
    for (int s = 0; s < 4; s++)
        for (int C = 1; C <= 3; C += 2)
            for (int bits = 8; bits <= 16; bits += 8) {
                roundtrip(C, sizes[s][0], sizes[s][1], bits, 0);
                roundtrip(C, sizes[s][0], sizes[s][1], bits, 1);
            }
}

static void test_png_write_clamps(void) {
    Image im, back;
    char err[512];
    image_alloc(&im, 1, 1, 6);
    float in[6] = {-0.5f, 2.0f, NAN, INFINITY, 0.5f / 255.0f, 1.5f / 255.0f}, want[6] = {0, 1, 0, 1, s8(1), s8(2)};
    memcpy(im.data, in, sizeof(in));
    const char *path = tl_scratch_path("clamp.png");
    EXPECT(image_write_png(path, &im, 8, NULL, err, sizeof(err)) == 0, "%s", err);
    EXPECT(image_read_png(path, &back, err, sizeof(err)) == 0, "%s", err);
    if (back.data) EXPECT_CLOSE("out-of-range values clamp, NaN -> 0, halves round up", back.data, want, 6, 0, 0);
    image_free(&back);
    image_free(&im);
}

static void test_png_generation_text(void) {
    const char *json = "{\"model\": \"unet\", \"seed\": 42, \"user\": \"ID_3\", \"note\": \"gr\xc3\xbc\xc3\x9f \xf0\x9f\x93\xa1\"}";
    Image im;
    char err[512];
    image_alloc(&im, 3, 4, 4);
    fill_levels(&im, 8, 5);
    const char *path = tl_scratch_path("gen.png"), *plain = tl_scratch_path("plain.png");
    EXPECT(image_write_png(path, &im, 16, json, err, sizeof(err)) == 0, "%s", err);
    EXPECT(image_write_png(plain, &im, 8, NULL, err, sizeof(err)) == 0, "%s", err);
    char *got = image_read_png_text(path, "generation");
    EXPECT(got && strcmp(got, json) == 0, "generation text: got '%s'", got ? got : "(null)");
    free(got);
    EXPECT(image_read_png_text(path, "other") == NULL, "absent keyword gives NULL");
    EXPECT(image_read_png_text(plain, "generation") == NULL, "file without text gives NULL");
    EXPECT(image_read_png_text(tl_scratch_path("nowhere.png"), "generation") == NULL, "missing file gives NULL");
    EXPECT(image_read_png_text(corpus("bad_truncated_iend.png"), "generation") == NULL, "corrupt file gives NULL");
    got = image_read_png_text(corpus("ok_chunks.png"), "Comment");  // a tEXt chunk written by make_images.py
    EXPECT(got && strcmp(got, "hello") == 0, "tEXt Comment: got '%s'", got ? got : "(null)");
    free(got);
    // the chunk on disk: an uncompressed iTXt, keyword "generation", no language tags, the text as is
    size_t n;
    unsigned char *b = tl_read_file(path, &n);
    static const char head[] = "iTXtgeneration\0\0\0\0\0";
    unsigned char *at = b ? memmem(b, n, head, sizeof(head) - 1) : NULL;
    EXPECT(at && memcmp(at + sizeof(head) - 1, json, strlen(json)) == 0, "no uncompressed iTXt 'generation' chunk holding the JSON in %s", path);
    free(b);
    Image back;
    EXPECT(image_read_png(path, &back, err, sizeof(err)) == 0 && back.C == 3 && back.bits == 16, "image with text reads: %s", err);
    image_free(&back);
    image_free(&im);
}

static void test_png_write_errors(void) {
    Image im;
    char err[512];
    image_alloc(&im, 3, 2, 2);
    const char *p = tl_scratch_path("err.png");
    EXPECT(image_write_png(p, &im, 12, NULL, err, sizeof(err)) == -1 && strstr(err, "12-bit") && strstr(err, p), "12 bits: %s", err);
    EXPECT(image_write_png(p, &im, 8, "caf\xe9", err, sizeof(err)) == -1 && strstr(err, "UTF-8"), "latin-1 text: %s", err);
    EXPECT(image_write_png(p, &im, 8, "\xc0\xaf", err, sizeof(err)) == -1 && strstr(err, "UTF-8"), "overlong UTF-8: %s", err);
    const char *deep = tl_scratch_path("no/such/folder/x.png");
    EXPECT(image_write_png(deep, &im, 8, NULL, err, sizeof(err)) == -1 && strstr(err, deep), "missing folder: %s", err);
    Image two = im;
    two.C = 2;
    EXPECT(image_write_png(p, &two, 8, NULL, err, sizeof(err)) == -1 && strstr(err, "2 channels"), "C=2: %s", err);
    Image empty = {0};
    EXPECT(image_write_png(p, &empty, 8, NULL, err, sizeof(err)) == -1, "empty image written");
    EXPECT(access(p, F_OK) != 0, "a rejected write left a file");
    EXPECT(tl_count_tmp_files(tl_scratch_dir()) == 0, "temporary files left behind");
    image_free(&im);
}

// Every proper prefix of a valid file must be rejected with a message and leave the Image empty.
static void expect_prefixes_rejected(const char *label, const unsigned char *b, size_t n,
                                     int (*decode)(const void *, size_t, Image *, char *, size_t)) {
    int accepted = 0, silent = 0, dirty = 0;
    for (size_t len = 0; len < n; len++) {
        Image im;
        char err[512] = "";
        if (decode(b, len, &im, err, sizeof(err)) == 0) {
            if (accepted++ < 3) printf("  %s: prefix of %zu of %zu bytes accepted\n", label, len, n);
            image_free(&im);
            continue;
        }
        silent += !err[0];
        dirty += !is_zeroed(&im);
    }
    EXPECT(accepted == 0 && silent == 0 && dirty == 0, "%s: of %zu prefixes %d accepted, %d without a message, %d left data", label, n, accepted, silent, dirty);
}

static void test_png_truncated_and_memory(void) {
    Image im, a, b;
    char err[512];
    image_alloc(&im, 3, 9, 10);
    fill_levels(&im, 16, 3);
    const char *path = tl_scratch_path("trunc.png");
    EXPECT(image_write_png(path, &im, 16, "{\"a\": 1}", err, sizeof(err)) == 0, "%s", err);
    size_t n;
    unsigned char *file = tl_read_file(path, &n);
    EXPECT(image_decode_png(file, n, &a, err, sizeof(err)) == 0, "whole buffer: %s", err);
    EXPECT(image_read_png(path, &b, err, sizeof(err)) == 0, "file: %s", err);
    if (a.data && b.data) EXPECT_CLOSE("decode from memory == read from file", a.data, b.data, (size_t)3 * 9 * 10, 0, 0);
    expect_prefixes_rejected("png", file, n, image_decode_png);
    image_free(&a);
    image_free(&b);
    image_free(&im);
    free(file);
}

// ---------------------------------------------------------------- JPEG

// (3, H, W) in [0, 1] -> a baseline JPEG (libjpeg defaults: 4:2:0, optimised tables off); free() it
static unsigned char *encode_jpeg(const Image *im, int quality, unsigned long *len) {
    struct jpeg_compress_struct c;
    struct jpeg_error_mgr e;
    c.err = jpeg_std_error(&e);
    jpeg_create_compress(&c);
    unsigned char *out = NULL;
    *len = 0;
    jpeg_mem_dest(&c, &out, len);
    c.image_width = (JDIMENSION)im->W, c.image_height = (JDIMENSION)im->H;
    c.input_components = 3, c.in_color_space = JCS_RGB;
    jpeg_set_defaults(&c);
    jpeg_set_quality(&c, quality, TRUE);
    jpeg_start_compress(&c, TRUE);
    unsigned char *row = xmalloc((size_t)im->W * 3);
    for (int y = 0; y < im->H; y++) {
        for (int x = 0; x < im->W; x++)
            for (int k = 0; k < 3; k++) {
                float v = *px(im, k, y, x);
                row[3 * x + k] = (unsigned char)(v <= 0 ? 0 : v >= 1 ? 255 : (int)(v * 255.0f + 0.5f));
            }
        JSAMPROW rp = row;
        jpeg_write_scanlines(&c, &rp, 1);
    }
    jpeg_finish_compress(&c);
    jpeg_destroy_compress(&c);
    free(row);
    return out;
}

// the ok_*.jpg content before compression (make_images.py smooth_rgb)
static float smooth_rgb(int x, int y, int c) { return s8(c == 0 ? 8 * x + 4 : c == 1 ? 10 * y + 5 : 200 - 3 * x - 4 * y); }

static void expect_jpeg_close(const char *file, int C, double max_tol, double mean_tol) {
    Image im;
    char err[1024];
    if (image_read(corpus(file), &im, err, sizeof(err)) != 0) {
        EXPECT(0, "%s rejected: %s", file, err);
        return;
    }
    EXPECT(im.C == C && im.H == 24 && im.W == 32 && im.bits == 8, "%s: (%d, %d, %d) %d-bit", file, im.C, im.H, im.W, im.bits);
    double maxe = 0, sum = 0;
    size_t n = 0;
    for (int c = 0; c < im.C && im.H == 24 && im.W == 32; c++)
        for (int y = 0; y < 24; y++)
            for (int x = 0; x < 32; x++) {
                // gray: PIL's "L" conversion, ITU-R 601-2 luma
                float want = C == 3 ? smooth_rgb(x, y, c) : 0.299f * smooth_rgb(x, y, 0) + 0.587f * smooth_rgb(x, y, 1) + 0.114f * smooth_rgb(x, y, 2);
                double d = fabs(*px(&im, c, y, x) - want) * 255;
                maxe = fmax(maxe, d), sum += d, n++;
            }
    printf("  %-20s vs the uncompressed pattern: mean |diff| %.2f, max %.1f (0..255)\n", file, n ? sum / n : 0, maxe);
    EXPECT(n && maxe <= max_tol && sum / n <= mean_tol, "%s: mean %.2f max %.1f beyond %.1f / %.1f", file, n ? sum / n : 0, maxe, mean_tol, max_tol);
    image_free(&im);
}

static void test_jpeg_reads(void) {
    expect_jpeg_close("ok_rgb.jpg", 3, 12, 1.5);  // 4:2:0 chroma
    expect_jpeg_close("ok_progressive.jpg", 3, 12, 1.5);
    expect_jpeg_close("ok_rgb444.jpeg", 3, 6, 1.0);
    expect_jpeg_close("ok_gray.jpg", 1, 4, 1.0);
    // baseline and progressive encodings of the same pixels decode identically; memory == file
    Image a, b, m;
    char err[512];
    size_t n;
    unsigned char *buf = tl_read_file(corpus("ok_rgb.jpg"), &n);
    EXPECT(image_read_jpeg(corpus("ok_rgb.jpg"), &a, err, sizeof(err)) == 0, "%s", err);
    EXPECT(buf && image_decode_jpeg(buf, n, &m, err, sizeof(err)) == 0, "from memory: %s", err);
    if (a.data && m.data) EXPECT_CLOSE("jpeg decode from memory == from file", m.data, a.data, (size_t)3 * 24 * 32, 0, 0);
    EXPECT(image_read_jpeg(corpus("ok_progressive.jpg"), &b, err, sizeof(err)) == 0, "%s", err);
    image_free(&a);
    image_free(&b);
    image_free(&m);
    free(buf);
}

static void test_jpeg_encode_decode_and_truncation(void) {
    Image im, back;
    char err[512];
    image_alloc(&im, 3, 40, 48);
    for (int y = 0; y < 40; y++)
        for (int x = 0; x < 48; x++)
            for (int c = 0; c < 3; c++) *px(&im, c, y, x) = 0.5f + 0.4f * sinf(0.11f * x + 0.07f * y + 2.0f * c);
    unsigned long len;
    unsigned char *jpg = encode_jpeg(&im, 95, &len);
    EXPECT(image_decode_jpeg(jpg, len, &back, err, sizeof(err)) == 0, "%s", err);
    double sum = 0, maxe = 0;
    for (size_t i = 0; back.data && i < (size_t)3 * 40 * 48; i++) {
        double d = fabs(back.data[i] - im.data[i]) * 255;
        sum += d, maxe = fmax(maxe, d);
    }
    sum /= 3 * 40 * 48;
    printf("  libjpeg q95 4:2:0 round trip: mean |diff| %.2f, max %.1f (0..255)\n", sum, maxe);
    EXPECT(back.data && sum < 2 && maxe < 24, "q95 round trip: mean %.2f max %.1f", sum, maxe);  // chroma is subsampled
    image_free(&back);
    expect_prefixes_rejected("jpeg", jpg, len, image_decode_jpeg);
    // bytes after EOI are ignored
    unsigned char *longer = xmalloc(len + 5);
    memcpy(longer, jpg, len);
    memcpy(longer + len, "junk!", 5);
    EXPECT(image_decode_jpeg(longer, len + 5, &back, err, sizeof(err)) == 0, "trailing bytes after EOI: %s", err);
    image_free(&back);
    free(longer);
    free(jpg);
    image_free(&im);
}

// ---------------------------------------------------------------- BMP

static void test_bmp_variants(void) {
    static const Expected cases[] = {
        {"ok_bgr24.bmp", 3, 5, 7, 8, f_p8},
        {"ok_bgr24_topdown.bmp", 3, 5, 7, 8, f_p8},
        {"ok_bgrx32.bmp", 3, 5, 7, 8, f_p8},
        {"ok_v5_bgr24.bmp", 3, 5, 7, 8, f_p8},
        {"ok_pal8.bmp", 3, 5, 7, 8, f_pal4},  // 16-colour palette, index (x + 3y) % 16, as ok_palette4.png
        {"ok_gray8.bmp", 1, 5, 7, 8, f_bmpgray},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) expect_file(&cases[i]);
    size_t n;
    unsigned char *b = tl_read_file(corpus("ok_bgr24.bmp"), &n);
    // every prefix fails the file-size check; so does the file with a byte appended
    int accepted = 0;
    for (size_t len = 0; b && len < n; len++) {
        char path[600], err[1024];
        snprintf(path, sizeof(path), "%s", tl_scratch_path("prefix.bmp"));
        FILE *f = fopen(path, "wb");
        if (len) fwrite(b, 1, len, f);
        fclose(f);
        Image im;
        if (image_read_bmp(path, &im, err, sizeof(err)) == 0) accepted++, image_free(&im);
    }
    EXPECT(accepted == 0, "%d truncated BMPs accepted", accepted);
    free(b);
}

// ---------------------------------------------------------------- the corpus of malformed files

static const struct {
    const char *file, *want;
} bad_messages[] = {
    {"bad_empty.png", "not a PNG"},
    {"bad_signature.png", "not a PNG"},
    {"bad_truncated_idat.png", "truncated"},
    {"bad_no_iend.png", "truncated"},
    {"bad_idat_crc.png", "CRC"},
    {"bad_ihdr_crc.png", "CRC"},
    {"bad_huge_dims.png", "exceeds user limit"},
    {"bad_big_dims.png", "beyond the limit"},
    {"bad_dims_vs_size.png", "more than deflate can expand"},
    {"bad_zero_width.png", "Image width is zero"},
    {"bad_bit_depth.png", "Invalid bit depth"},
    {"bad_color_type.png", "Invalid color type"},
    {"bad_no_plte.png", "PLTE"},
    {"bad_short_data.png", "Not enough image data"},
    {"bad_filter_type.png", "filter"},
    {"bad_empty.jpg", "not a JPEG"},
    {"bad_cmyk.jpg", "CMYK"},
    {"bad_huge_dims.jpg", "beyond the limit"},
    {"bad_no_eoi.jpg", "Premature end"},
    {"bad_truncated_scan.jpg", "Premature end"},
    {"bad_progressive_truncated.jpg", "Premature end"},
    {"bad_marker_in_scan.jpg", "Corrupt JPEG data"},
    {"bad_empty.bmp", "not a BMP"},
    {"bad_short.bmp", "shorter than the BMP headers"},
    {"bad_file_size.bmp", "file size"},
    {"bad_offset.bmp", "from offset 5000"},
    {"bad_offset_in_header.bmp", "headers end at byte 54"},
    {"bad_huge_width.bmp", "beyond the limit"},
    {"bad_negative_width.bmp", "invalid size"},
    {"bad_zero_height.bmp", "invalid size"},
    {"bad_min_height.bmp", "invalid size"},
    {"bad_bpp16.bmp", "16 bits per pixel"},
    {"bad_rle8.bmp", "compression type 1"},
    {"bad_planes.bmp", "planes"},
    {"bad_os2_header.bmp", "BITMAPINFOHEADER"},
    {"bad_info_size.bmp", "BITMAPINFOHEADER"},
    {"bad_palette_index.bmp", "palette index"},
    {"bad_colors_used.bmp", "1000 palette colours"},
    {"bad_palette_overlap.bmp", "headers and palette end at byte 1078"},
    {"bad_image_size.bmp", "image size"},
    {"bad_image_size_past_end.bmp", "image size"},
};

static int ends_with(const char *s, const char *suffix) {
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && strcmp(s + n - m, suffix) == 0;
}

static void test_corpus(void) {
    DIR *d = opendir(corpus_dir());
    if (!d) {
        EXPECT(0, "cannot open corpus %s (run from the repository root)", corpus_dir());
        return;
    }
    int n_ok = 0, n_bad = 0, checked = 0;
    for (struct dirent *e; (e = readdir(d));) {
        const char *name = e->d_name;
        if (!ends_with(name, ".png") && !ends_with(name, ".jpg") && !ends_with(name, ".jpeg") && !ends_with(name, ".bmp")) continue;
        char *path = corpus(name), err[1024] = "";
        Image im;
        int rc = image_read(path, &im, err, sizeof(err));
        if (strncmp(name, "ok_", 3) == 0) {
            n_ok++;
            EXPECT(rc == 0, "%s rejected: %s", path, err);
            if (rc == 0) image_free(&im);
            continue;
        }
        n_bad++;
        char prefix[1100];
        snprintf(prefix, sizeof(prefix), "file %s: ", path);
        EXPECT(rc == -1, "%s accepted, want rejection", path);
        if (rc == 0) {
            image_free(&im);
            continue;
        }
        EXPECT(is_zeroed(&im), "%s: Image not left empty", name);
        EXPECT(strncmp(err, prefix, strlen(prefix)) == 0 && strlen(err) > strlen(prefix) + 10, "%s: message '%s'", name, err);
        for (size_t i = 0; i < sizeof(bad_messages) / sizeof(bad_messages[0]); i++)
            if (strcmp(bad_messages[i].file, name) == 0) {
                EXPECT(strstr(err, bad_messages[i].want), "%s: message '%s' lacks '%s'", name, err, bad_messages[i].want);
                checked++;
            }
        // the in-memory decoders say the same thing with "<FORMAT> buffer: " in front
        size_t n;
        unsigned char *b = tl_read_file(path, &n);
        int png = ends_with(name, ".png"), jpg = ends_with(name, ".jpg");
        if (b && (png || jpg)) {
            char err2[1024] = "";
            rc = png ? image_decode_png(b, n, &im, err2, sizeof(err2)) : image_decode_jpeg(b, n, &im, err2, sizeof(err2));
            const char *src = png ? "PNG buffer: " : "JPEG buffer: ";
            EXPECT(rc == -1 && is_zeroed(&im) && strncmp(err2, src, strlen(src)) == 0 && strcmp(err2 + strlen(src), err + strlen(prefix)) == 0,
                   "%s from memory: '%s' vs '%s'", name, err2, err);
            if (rc == 0) image_free(&im);
        }
        free(b);
        if (getenv("DOPPEL_SHOW_MESSAGES")) printf("  %s\n", err);
    }
    closedir(d);
    printf("  corpus: %d valid, %d malformed files (%d messages checked for content)\n", n_ok, n_bad, checked);
    EXPECT(n_ok >= 20 && n_bad >= 40, "corpus %s too small (%d ok, %d bad); regenerate with make_images.py", corpus_dir(), n_ok, n_bad);
    EXPECT(checked == (int)(sizeof(bad_messages) / sizeof(bad_messages[0])), "only %d of the expected messages were checked (files missing?)", checked);
}

static void test_read_errors(void) {
    Image im;
    char err[512];
    const char *p = tl_scratch_path("nothing.png");
    EXPECT(image_read(p, &im, err, sizeof(err)) == -1 && strstr(err, p) && strstr(err, "cannot open") && is_zeroed(&im), "missing: %s", err);
    EXPECT(image_read("spectrogram.tiff", &im, err, sizeof(err)) == -1 && strstr(err, "spectrogram.tiff") && strstr(err, ".png"), "unknown type: %s", err);
    EXPECT(image_read_png(tl_scratch_dir(), &im, err, sizeof(err)) == -1 && strstr(err, "not a regular file"), "folder: %s", err);
    // extensions are matched without regard to case
    char up[600];
    snprintf(up, sizeof(up), "%s", tl_scratch_path("UPPER.PNG"));
    Image g;
    image_alloc(&g, 1, 2, 2);
    EXPECT(image_write_png(up, &g, 8, NULL, err, sizeof(err)) == 0 && image_read(up, &im, err, sizeof(err)) == 0, ".PNG: %s", err);
    image_free(&im);
    image_free(&g);
    // image_alloc refuses what the readers refuse
    EXPECT(image_alloc(&im, 2, 4, 4) == -1 && is_zeroed(&im), "C = 2 allocated");
    EXPECT(image_alloc(&im, 1, 0, 4) == -1 && image_alloc(&im, 3, 4, -1) == -1, "empty image allocated");
    EXPECT(image_alloc(&im, 1, 100000, 100000) == -1, "10^10 pixels allocated");
}

// ---------------------------------------------------------------- resize

static void test_resize_area(void) {
    int cases[][4] = {{37, 23, 10, 7}, {256, 256, 64, 64}, {9, 30, 4, 11}, {5, 5, 5, 2}, {100, 3, 33, 1}};
    for (int k = 0; k < 5; k++) {
        Image src, dst;
        image_alloc(&src, 3, cases[k][0], cases[k][1]);
        for (size_t i = 0; i < (size_t)3 * src.H * src.W; i++) src.data[i] = 0.3f;
        EXPECT(image_resize(&src, &dst, cases[k][2], cases[k][3], RESIZE_AREA) == 0, "resize");
        float *want = xmalloc((size_t)3 * dst.H * dst.W * sizeof(float));
        for (size_t i = 0; i < (size_t)3 * dst.H * dst.W; i++) want[i] = 0.3f;
        char what[64];
        snprintf(what, sizeof(what), "area %dx%d -> %dx%d of a constant", cases[k][0], cases[k][1], cases[k][2], cases[k][3]);
        EXPECT_CLOSE(what, dst.data, want, (size_t)3 * dst.H * dst.W, 1e-6, 0);
        free(want);
        image_free(&src);
        image_free(&dst);
    }
    // 2x shrink: the mean of each 2x2 block
    Image src, dst;
    image_alloc(&src, 3, 10, 14);
    fill_randn(src.data, (size_t)3 * 10 * 14, 7, 1.0f);
    EXPECT(image_resize(&src, &dst, 5, 7, RESIZE_AUTO) == 0 && dst.C == 3 && dst.H == 5 && dst.W == 7, "2x shrink");
    float want[3 * 5 * 7];
    for (int c = 0; c < 3; c++)
        for (int y = 0; y < 5; y++)
            for (int x = 0; x < 7; x++)
                want[(c * 5 + y) * 7 + x] = (float)(((double)*px(&src, c, 2 * y, 2 * x) + *px(&src, c, 2 * y, 2 * x + 1) +
                                                     *px(&src, c, 2 * y + 1, 2 * x) + *px(&src, c, 2 * y + 1, 2 * x + 1)) / 4);
    if (dst.data) EXPECT_CLOSE("area 2x shrink == 2x2 means", dst.data, want, 3 * 5 * 7, 3e-7, 0);
    image_free(&dst);
    image_free(&src);
    // 3 -> 2: [a, b, c] -> [(a + b/2) / 1.5, (b/2 + c) / 1.5], fractional coverage
    image_alloc(&src, 1, 1, 3);
    src.data[0] = 1, src.data[1] = 4, src.data[2] = 10;
    float w32[2] = {(1 + 2) / 1.5f, (2 + 10) / 1.5f};
    EXPECT(image_resize(&src, &dst, 1, 2, RESIZE_AREA) == 0, "3 -> 2");
    if (dst.data) EXPECT_CLOSE("area 3 -> 2 with half pixels", dst.data, w32, 2, 1e-6, 0);
    image_free(&dst);
    image_free(&src);
}

static void test_resize_bilinear_matches_torch(void) {
    // torch.nn.functional.interpolate(x, size, mode="bilinear", align_corners=False), computed once in
    // float64 with x[i][j] = (4i + j)^2 / 100 of shape (3, 4)
    static const float want57[5 * 7] = {
        0.0f, 0.00357142857f, 0.00928571429f, 0.025f, 0.0435714286f, 0.0721428571f, 0.09f,
        0.064f, 0.079f, 0.103f, 0.137f, 0.173857143f, 0.220714286f, 0.25f,
        0.16f, 0.192142857f, 0.243571429f, 0.305f, 0.369285714f, 0.443571429f, 0.49f,
        0.448f, 0.497285714f, 0.576142857f, 0.665f, 0.756714286f, 0.858428571f, 0.922f,
        0.64f, 0.700714286f, 0.797857143f, 0.905f, 1.015f, 1.135f, 1.21f,
    };
    static const float want76[7 * 6] = {
        0.0f, 0.005f, 0.015f, 0.035f, 0.065f, 0.09f,
        0.0228571429f, 0.0335714286f, 0.0511904762f, 0.0788095238f, 0.116428571f, 0.147142857f,
        0.0914285714f, 0.119285714f, 0.159761905f, 0.210238095f, 0.270714286f, 0.318571429f,
        0.16f, 0.205f, 0.268333333f, 0.341666667f, 0.425f, 0.49f,
        0.365714286f, 0.427857143f, 0.514047619f, 0.610238095f, 0.716428571f, 0.798571429f,
        0.571428571f, 0.650714286f, 0.759761905f, 0.878809524f, 1.00785714f, 1.10714286f,
        0.64f, 0.725f, 0.841666667f, 0.968333333f, 1.105f, 1.21f,
    };
    Image src, dst;
    image_alloc(&src, 1, 3, 4);
    for (int i = 0; i < 3; i++)
        for (int j = 0; j < 4; j++) src.data[i * 4 + j] = (float)((4 * i + j) * (4 * i + j)) / 100.0f;
    EXPECT(image_resize(&src, &dst, 5, 7, RESIZE_BILINEAR) == 0, "resize");
    if (dst.data) EXPECT_CLOSE("bilinear (3,4) -> (5,7) vs torch", dst.data, want57, 35, 1e-6, 1e-6);
    image_free(&dst);
    EXPECT(image_resize(&src, &dst, 7, 6, RESIZE_AUTO) == 0, "resize");
    if (dst.data) EXPECT_CLOSE("auto (growing) (3,4) -> (7,6) vs torch bilinear", dst.data, want76, 42, 1e-6, 1e-6);
    image_free(&dst);
    image_free(&src);
}

static void test_resize_lanczos_and_auto(void) {
    Image src, dst;
    image_alloc(&src, 3, 13, 9);
    for (size_t i = 0; i < (size_t)3 * 13 * 9; i++) src.data[i] = 0.6f;
    int sizes[][2] = {{40, 31}, {5, 4}, {13, 20}, {1, 1}};
    for (int k = 0; k < 4; k++) {
        EXPECT(image_resize(&src, &dst, sizes[k][0], sizes[k][1], RESIZE_LANCZOS) == 0, "lanczos");
        float *want = xmalloc((size_t)3 * sizes[k][0] * sizes[k][1] * sizeof(float));
        for (size_t i = 0; i < (size_t)3 * sizes[k][0] * sizes[k][1]; i++) want[i] = 0.6f;
        EXPECT_CLOSE("lanczos of a constant", dst.data, want, (size_t)3 * sizes[k][0] * sizes[k][1], 1e-6, 0);
        free(want);
        image_free(&dst);
    }
    // a Lanczos 4x enlargement reproduces a linear ramp away from the edges, and passes through
    // the samples' values at their centres
    image_free(&src);
    image_alloc(&src, 1, 1, 16);
    for (int x = 0; x < 16; x++) src.data[x] = 0.05f * x;
    EXPECT(image_resize(&src, &dst, 1, 64, RESIZE_LANCZOS) == 0, "lanczos ramp");
    double worst = 0;
    for (int o = 12; o < 52; o++) worst = fmax(worst, fabs(dst.data[o] - 0.05 * ((o + 0.5) / 4 - 0.5)));
    EXPECT(worst < 2e-3, "lanczos 4x of a ramp: max error %.3g inside", worst);
    image_free(&dst);
    image_free(&src);
    // AUTO decides per axis: shrink rows by area, grow columns bilinearly
    image_alloc(&src, 1, 8, 5);
    fill_randn(src.data, 40, 3, 1.0f);
    Image a, b, c;
    EXPECT(image_resize(&src, &a, 4, 9, RESIZE_AUTO) == 0, "auto");
    EXPECT(image_resize(&src, &b, 4, 5, RESIZE_AREA) == 0 && image_resize(&b, &c, 4, 9, RESIZE_BILINEAR) == 0, "two passes");
    if (a.data && c.data) EXPECT_CLOSE("auto == area rows then bilinear columns", a.data, c.data, 36, 1e-6, 0);
    image_free(&a);
    image_free(&b);
    image_free(&c);
    EXPECT(image_resize(&src, &a, 8, 5, RESIZE_LANCZOS) == 0 && memcmp(a.data, src.data, 40 * sizeof(float)) == 0, "same size copies");
    image_free(&a);
    EXPECT(image_resize(&src, &a, 0, 5, RESIZE_AUTO) == -1 && is_zeroed(&a), "zero height");
    EXPECT(image_resize(&src, &a, 4, 4, (ResizeMode)7) == -1, "unknown mode");
    EXPECT(image_resize(&src, &src, 4, 4, RESIZE_AUTO) == -1 && src.data, "resize into its own source");
    image_free(&src);
}

// ---------------------------------------------------------------- colour maps

static void test_colormap_tables(void) {
    Colormap c;
    EXPECT(colormap_parse("jet", &c) == 0 && c == CMAP_JET && strcmp(colormap_name(c), "jet") == 0, "jet");
    EXPECT(colormap_parse("viridis", &c) == 0 && c == CMAP_VIRIDIS && strcmp(colormap_name(c), "viridis") == 0, "viridis");
    EXPECT(colormap_parse("gray", &c) == 0 && c == CMAP_GRAY && strcmp(colormap_name(c), "gray") == 0, "gray");
    EXPECT(colormap_parse("Jet", &c) == -1 && colormap_parse("", &c) == -1 && colormap_parse("hot", &c) == -1, "unknown names");
    // matplotlib 3.6: cm.get_cmap(name)(np.linspace(0, 1, 256))[i, :3], i.e. the map at i / 255
    static const struct {
        int i;
        float rgb[3];
    } jet[] = {
        {0, {0, 0, 0.5f}},
        {28, {0, 0, 0.999108734f}},
        {30, {0, 0, 1}},
        {32, {0, 0.00196078431f, 1}},
        {64, {0, 0.503921569f, 1}},
        {89, {0, 0.896078431f, 0.970904491f}},
        {96, {0.0853889943f, 1, 0.882352941f}},
        {128, {0.490196078f, 1, 0.477545857f}},
        {160, {0.895003163f, 1, 0.0727387729f}},
        {168, {0.996204934f, 0.930283224f, 0}},
        {200, {1, 0.46550472f, 0}},
        {230, {0.945632799f, 0.0297748729f, 0}},
        {255, {0.5f, 0, 0}},
    }, viridis[] = {
        {0, {0.267004f, 0.004874f, 0.329415f}},
        {1, {0.268510f, 0.009605f, 0.335427f}},
        {255, {0.993248f, 0.906157f, 0.143936f}},
    };
    for (size_t k = 0; k < sizeof(jet) / sizeof(jet[0]); k++) {
        float got[3];
        colormap_apply(CMAP_JET, jet[k].i / 255.0f, got);
        char what[32];
        snprintf(what, sizeof(what), "jet(%d/255)", jet[k].i);
        EXPECT_CLOSE(what, got, jet[k].rgb, 3, 1e-6, 0);
    }
    for (size_t k = 0; k < sizeof(viridis) / sizeof(viridis[0]); k++) {
        float got[3];
        colormap_apply(CMAP_VIRIDIS, viridis[k].i / 255.0f, got);
        EXPECT_CLOSE("viridis table entry", got, viridis[k].rgb, 3, 1e-6, 0);
    }
    float a[3], b[3], m[3], g[3];
    colormap_apply(CMAP_VIRIDIS, 100 / 255.0f, a);
    colormap_apply(CMAP_VIRIDIS, 101 / 255.0f, b);
    colormap_apply(CMAP_VIRIDIS, 100.5f / 255.0f, m);
    float mid[3] = {(a[0] + b[0]) / 2, (a[1] + b[1]) / 2, (a[2] + b[2]) / 2};
    EXPECT_CLOSE("viridis interpolates linearly between entries", m, mid, 3, 1e-6, 0);
    colormap_apply(CMAP_GRAY, 0.25f, g);
    float gw[3] = {0.25f, 0.25f, 0.25f};
    EXPECT_CLOSE("gray", g, gw, 3, 0, 0);
    colormap_apply(CMAP_JET, -3.0f, a);
    colormap_apply(CMAP_JET, NAN, b);
    float j0[3] = {0, 0, 0.5f};
    EXPECT_CLOSE("jet clamps below 0", a, j0, 3, 0, 0);
    EXPECT_CLOSE("jet maps NaN to 0", b, j0, 3, 0, 0);
    colormap_apply(CMAP_JET, 7.0f, a);
    float j1[3] = {0.5f, 0, 0};
    EXPECT_CLOSE("jet clamps above 1", a, j1, 3, 0, 0);
}

// v on a fine grid -> render -> invert: the error in v (outside jet's flat stretch, where the
// colour does not change with v) and the error of the re-rendered colour (everywhere).
static void test_colormap_invert_clean(void) {
    const int N = 4096;
    Colormap maps[3] = {CMAP_JET, CMAP_VIRIDIS, CMAP_GRAY};
    for (int m = 0; m < 3; m++) {
        Image v, rgb, inv, again;
        image_alloc(&v, 1, 1, N);
        for (int i = 0; i < N; i++) v.data[i] = (float)i / (N - 1);
        EXPECT(colormap_render(maps[m], &v, &rgb) == 0 && colormap_invert(maps[m], &rgb, &inv) == 0 && colormap_render(maps[m], &inv, &again) == 0,
               "render/invert %s", colormap_name(maps[m]));
        double ve = 0, ce = 0;
        for (int i = 0; i < N; i++) {
            int flat = maps[m] == CMAP_JET && v.data[i] >= 0.11f && v.data[i] <= 0.125f;
            if (!flat) ve = fmax(ve, fabs(inv.data[i] - v.data[i]));
            for (int k = 0; k < 3; k++) ce = fmax(ce, fabs(again.data[k * N + i] - rgb.data[k * N + i]));
        }
        printf("  %-8s clean float round trip: max |v error| %.2e, max colour error %.2e (in 0..255: %.3f, %.3f)\n", colormap_name(maps[m]), ve, ce, ve * 255, ce * 255);
        EXPECT(ve < 0.5 / 255 && ce < 0.5 / 255, "%s: v error %.3g, colour error %.3g (want < 0.5/255)", colormap_name(maps[m]), ve, ce);
        // jet's flat stretch [0.11, 0.125] is pure blue; it inverts to its middle
        if (maps[m] == CMAP_JET) {
            float blue[3] = {0, 0, 1};
            Image b1, g1;
            image_alloc(&b1, 3, 1, 1);
            memcpy(b1.data, blue, sizeof(blue));
            colormap_invert(CMAP_JET, &b1, &g1);
            EXPECT(fabsf(g1.data[0] - 0.1175f) < 1e-3f, "pure blue inverts to %g, want the middle of [0.11, 0.125]", g1.data[0]);
            image_free(&b1);
            image_free(&g1);
        }
        image_free(&v);
        image_free(&rgb);
        image_free(&inv);
        image_free(&again);
    }
    Image gray, rgb, out;
    image_alloc(&gray, 1, 2, 2);
    image_alloc(&rgb, 3, 2, 2);
    EXPECT(colormap_invert(CMAP_JET, &gray, &out) == -1 && is_zeroed(&out), "invert of a 1-channel image");
    EXPECT(colormap_render(CMAP_JET, &rgb, &out) == -1 && is_zeroed(&out), "render of a 3-channel image");
    image_free(&gray);
    image_free(&rgb);
}

// A spectrogram-like magnitude field: smooth ridges plus noise on 4x4 blocks (the gait10 images
// are upsampled, blocky spectrograms), (1, H, W).
static void spectrogram_like(Image *v, int H, int W, int blocky, unsigned long long seed) {
    image_alloc(v, 1, H, W);
    Rng r;
    rng_seed(&r, seed);
    float *noise = xmalloc((size_t)(H / 4 + 1) * (size_t)(W / 4 + 1) * sizeof(float));
    for (int i = 0; i < (H / 4 + 1) * (W / 4 + 1); i++) noise[i] = rng_uniform(&r);
    for (int y = 0; y < H; y++)
        for (int x = 0; x < W; x++) {
            float ridge = expf(-powf((y - H / 2.0f - 0.2f * H * sinf(x * 0.05f)) / (0.08f * H), 2));
            float val = 0.15f + 0.6f * ridge + (blocky ? 0.35f * noise[(y / 4) * (W / 4 + 1) + x / 4] * (0.3f + ridge) : 0.1f * sinf(0.07f * x + 0.05f * y));
            v->data[(size_t)y * W + x] = val < 0 ? 0 : val > 1 ? 1 : val;
        }
    free(noise);
}

static void invert_error(const char *what, Colormap c, const Image *truth, const Image *rgb, double *mean_out) {
    Image inv, again;
    colormap_invert(c, rgb, &inv);
    colormap_render(c, &inv, &again);
    size_t HW = (size_t)truth->H * (size_t)truth->W;
    double ve = 0, vmax = 0, ce = 0;
    for (size_t i = 0; i < HW; i++) {
        double d = fabs(inv.data[i] - truth->data[i]);
        ve += d, vmax = fmax(vmax, d);
        for (int k = 0; k < 3; k++) ce += fabs(again.data[k * HW + i] - rgb->data[k * HW + i]);
    }
    printf("  %-34s mean |v error| %.4f (%.2f/255), max %.3f; mean colour error of the re-render %.2f/255\n", what, ve / HW, ve / HW * 255, vmax,
           ce / (3 * HW) * 255);
    *mean_out = ve / HW;
    image_free(&inv);
    image_free(&again);
}

static void test_colormap_invert_noisy(void) {
    for (int blocky = 0; blocky <= 1; blocky++) {
        Image v, rgb, q;
        spectrogram_like(&v, 256, 256, blocky, 11);
        colormap_render(CMAP_JET, &v, &rgb);
        // 8-bit quantisation alone
        image_alloc(&q, 3, 256, 256);
        for (size_t i = 0; i < (size_t)3 * 256 * 256; i++) q.data[i] = roundf(rgb.data[i] * 255) / 255;
        double e8, e90, e75;
        char what[64];
        snprintf(what, sizeof(what), "jet, %s, 8-bit", blocky ? "blocky" : "smooth");
        invert_error(what, CMAP_JET, &v, &q, &e8);
        EXPECT(e8 < 0.5 / 255 * 2, "8-bit quantised: mean error %.4f", e8);
        int qualities[2] = {90, 75};
        for (int k = 0; k < 2; k++) {
            unsigned long len;
            unsigned char *jpg = encode_jpeg(&rgb, qualities[k], &len);
            Image dec;
            char err[256];
            EXPECT(image_decode_jpeg(jpg, len, &dec, err, sizeof(err)) == 0, "%s", err);
            snprintf(what, sizeof(what), "jet, %s, JPEG q%d 4:2:0", blocky ? "blocky" : "smooth", qualities[k]);
            invert_error(what, CMAP_JET, &v, &dec, k == 0 ? &e90 : &e75);
            image_free(&dec);
            free(jpg);
        }
        // smooth content survives JPEG well; blocky content has chroma ringing at every edge
        EXPECT(e90 < (blocky ? 0.03 : 0.01), "JPEG q90 mean |v error| %.4f", e90);
        image_free(&v);
        image_free(&rgb);
        image_free(&q);
    }
}

static void test_colormap_fit(void) {
    Image v, rgb, noise;
    spectrogram_like(&v, 64, 64, 1, 5);
    colormap_render(CMAP_JET, &v, &rgb);
    double fj = colormap_fit(CMAP_JET, &rgb, 0.01f), fv = colormap_fit(CMAP_VIRIDIS, &rgb, 0.1f);
    EXPECT(fj == 1.0, "a clean jet render fits jet: %.3f", fj);
    EXPECT(fv < 0.2, "a jet render fits viridis: %.3f", fv);
    image_alloc(&noise, 3, 64, 64);
    Rng r;
    rng_seed(&r, 1);
    rng_fill_uniform(&r, noise.data, 3 * 64 * 64, 0, 1);
    double fn = colormap_fit(CMAP_JET, &noise, 0.1f);
    printf("  fit at tol 0.1: jet render to jet %.3f, to viridis %.3f; uniform RGB noise to jet %.3f\n", fj, fv, fn);
    EXPECT(fn < 0.3, "uniform noise fits jet: %.3f", fn);
    EXPECT(colormap_fit(CMAP_JET, &v, 0.1f) < 0, "fit of a 1-channel image");
    image_free(&v);
    image_free(&rgb);
    image_free(&noise);
}

// Runs before any other inversion, so the first call of each map includes building its grid.
// Timings are printed, not asserted (the machine may be shared).
static void test_colormap_speed(void) {
    Colormap maps[2] = {CMAP_JET, CMAP_VIRIDIS};
    for (int m = 0; m < 2; m++) {
        Image v, rgb, inv;
        spectrogram_like(&v, 256, 256, 1, 9);
        colormap_render(maps[m], &v, &rgb);
        double t0 = now_ms();
        colormap_invert(maps[m], &rgb, &inv);
        double t1 = now_ms();
        image_free(&inv);
        const int reps = 20;
        for (int i = 0; i < reps; i++) {
            colormap_invert(maps[m], &rgb, &inv);
            image_free(&inv);
        }
        double t2 = now_ms();
        printf("  %-8s 256x256: first inversion (builds the lookup grid) %.1f ms, then %.2f ms per image\n", colormap_name(maps[m]), t1 - t0,
               (t2 - t1) / reps);
        image_free(&v);
        image_free(&rgb);
    }
}

// ---------------------------------------------------------------- the real spectrograms

static const char *gait10_dir(void) {
    const char *d = getenv("DOPPEL_GAIT10");
    return d ? d : "../shared/data/gait10";  // shared/ sits beside the checkout
}

static void test_gait10_spectrograms(void) {
    struct stat sb;
    if (stat(gait10_dir(), &sb) != 0) {
        tl_skip("no gait10 data at %s (set DOPPEL_GAIT10)", gait10_dir());
        return;
    }
    const float tol = 0.25f;  // Euclidean RGB distance in [0, 1] units: JPEG 4:2:0 chroma ringing is large
    int n = 0, n_read = 0, bad = 0;
    double sum_fit = 0, min_fit = 1, sum_err = 0, max_err = 0, sum_v = 0, t_inv = 0, fit_viridis = 0;
    long hist[8] = {0};
    for (int id = 1; id <= 10; id++) {
        char dir[600];
        snprintf(dir, sizeof(dir), "%s/ID_%d", gait10_dir(), id);
        DIR *d = opendir(dir);
        if (!d) continue;
        int k = 0;
        for (struct dirent *e; (e = readdir(d));) {
            if (!ends_with(e->d_name, ".jpg")) continue;
            char path[1200], err[1400];
            snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
            Image im;
            if (image_read(path, &im, err, sizeof(err)) != 0) {
                if (bad++ < 5) printf("  %s\n", err);
                continue;
            }
            n_read++;
            if (im.C != 3 || im.H != 256 || im.W != 256 || im.bits != 8) {
                if (bad++ < 5) printf("  %s: (%d, %d, %d) %d-bit, want (3, 256, 256) 8-bit\n", path, im.C, im.H, im.W, im.bits);
            } else if (k++ % 8 == 0) {  // every 8th image of each person for the colour statistics
                double fit = colormap_fit(CMAP_JET, &im, tol);
                fit_viridis += colormap_fit(CMAP_VIRIDIS, &im, tol);
                Image inv, again;
                double t0 = now_ms();
                colormap_invert(CMAP_JET, &im, &inv);
                t_inv += now_ms() - t0;
                colormap_render(CMAP_JET, &inv, &again);
                double err_sum = 0;
                size_t HW = 256 * 256;
                for (size_t i = 0; i < HW; i++) {
                    for (int c = 0; c < 3; c++) {
                        double dd = fabs(again.data[c * HW + i] - im.data[c * HW + i]) * 255;
                        err_sum += dd, max_err = fmax(max_err, dd);
                        int b = dd < 1 ? 0 : dd < 2 ? 1 : dd < 4 ? 2 : dd < 8 ? 3 : dd < 16 ? 4 : dd < 32 ? 5 : dd < 64 ? 6 : 7;
                        hist[b]++;
                    }
                    sum_v += inv.data[i];
                }
                sum_err += err_sum / (3 * HW);
                sum_fit += fit, min_fit = fmin(min_fit, fit);
                if (fit <= 0.9) printf("  %s: fits jet at tol %.2f for only %.3f of pixels\n", path, tol, fit);
                n++;
                image_free(&inv);
                image_free(&again);
            }
            image_free(&im);
        }
        closedir(d);
    }
    EXPECT(n_read >= 10 && bad == 0, "%d of %d gait10 JPEGs failed to read or have the wrong shape", bad, n_read + bad);
    if (n == 0) return;
    long total = 0;
    for (int b = 0; b < 8; b++) total += hist[b];
    printf("  gait10: read %d JPEGs strictly; colour statistics on %d of them\n", n_read, n);
    printf("  fit to jet at tol %.2f: mean %.3f, min %.3f (viridis: mean %.3f)\n", tol, sum_fit / n, min_fit, fit_viridis / n);
    printf("  invert -> render vs the JPEG: mean |diff| %.2f, max %.0f (0..255 units); mean magnitude %.3f\n", sum_err / n, max_err, sum_v / n / 65536);
    printf("  |diff| histogram (0..255 units) <1 %.1f%%, <2 %.1f%%, <4 %.1f%%, <8 %.1f%%, <16 %.1f%%, <32 %.1f%%, <64 %.1f%%, >=64 %.1f%%\n",
           100.0 * hist[0] / total, 100.0 * hist[1] / total, 100.0 * hist[2] / total, 100.0 * hist[3] / total, 100.0 * hist[4] / total,
           100.0 * hist[5] / total, 100.0 * hist[6] / total, 100.0 * hist[7] / total);
    printf("  inversion: %.2f ms per 256x256 image (mean, first call includes building the jet grid)\n", t_inv / n);
    EXPECT(min_fit > 0.9, "some gait10 image fits jet at tol %.2f for only %.3f of its pixels", tol, min_fit);
    EXPECT(fit_viridis / n < 0.5, "gait10 fits viridis as well as jet (%.3f)", fit_viridis / n);
}

int main(void) {
    RUN(test_png_variants);
    RUN(test_png_roundtrip);
    RUN(test_png_write_clamps);
    RUN(test_png_generation_text);
    RUN(test_png_write_errors);
    RUN(test_png_truncated_and_memory);
    RUN(test_jpeg_reads);
    RUN(test_jpeg_encode_decode_and_truncation);
    RUN(test_bmp_variants);
    RUN(test_corpus);
    RUN(test_read_errors);
    RUN(test_resize_area);
    RUN(test_resize_bilinear_matches_torch);
    RUN(test_resize_lanczos_and_auto);
    RUN(test_colormap_tables);
    RUN(test_colormap_speed);
    RUN(test_colormap_invert_clean);
    RUN(test_colormap_invert_noisy);
    RUN(test_colormap_fit);
    RUN(test_gait10_spectrograms);
    return tl_finish();
}

// png.c: PNG through libpng 1.6. Reading accepts every colour type and bit depth the format
// allows (palettes and 1/2/4-bit gray expanded to 8 bits, alpha and tRNS dropped, Adam7
// deinterlaced, 16-bit samples kept at 16-bit precision); writing produces 8/16-bit gray or RGB
// with an optional iTXt "generation" chunk holding the JSON that describes how the image was made.
//
// libpng reports errors by longjmp to the setjmp in the caller. Everything that must be freed or
// read after that jump lives in a PngRead/PngWrite struct reached through a pointer (never in a
// local variable changed after setjmp), so the error path frees it all and returns a message.
#include <png.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "image/image_internal.h"
#include "io/fileio.h"

#define PNG_TEXT_KEY "generation"
// deflate expands at most 1032:1, so a file of n bytes holds at most ~1032 n bytes of scanlines
#define DEFLATE_MAX_RATIO 1032

// libpng's last error and warning. Warnings alone are about things libpng has worked around (a
// bad CRC in an ancillary chunk, an odd sRGB profile) and are not printed; but libpng often gives
// the detail of an error as a warning just before it ("Image width exceeds user limit in IHDR",
// then "Invalid IHDR data"), so an error message carries the last warning along.
typedef struct {
    char error[420], warning[200];
} PngMsg;

static void on_error(png_structp png, png_const_charp msg) {
    PngMsg *m = png_get_error_ptr(png);
    if (m->warning[0]) snprintf(m->error, sizeof(m->error), "%.200s (%.199s)", msg, m->warning);
    else snprintf(m->error, sizeof(m->error), "%.200s", msg);
    png_longjmp(png, 1);
}

static void on_warning(png_structp png, png_const_charp msg) {
    PngMsg *m = png_get_error_ptr(png);
    snprintf(m->warning, sizeof(m->warning), "%s", msg);
}

typedef struct {
    png_structp png;
    png_infop info;
    const unsigned char *buf;
    size_t len, pos;
    unsigned char *pix;  // (H, rowbytes) the decoded scanlines
    png_bytep *rows;     // (H) pointers into pix
    PngMsg msg;
} PngRead;

static void read_mem(png_structp png, png_bytep out, size_t n) {
    PngRead *r = png_get_io_ptr(png);
    if (n > r->len - r->pos) png_error(png, "the file is truncated (it ends before the IEND chunk)");
    memcpy(out, r->buf + r->pos, n);
    r->pos += n;
}

static void read_cleanup(PngRead *r) {
    if (r->png) png_destroy_read_struct(&r->png, r->info ? &r->info : NULL, NULL);
    free(r->pix);
    free(r->rows);
    r->png = NULL, r->info = NULL, r->pix = NULL, r->rows = NULL;
}

// Scanlines (1 or 3 channels, 8 or 16 bits, big-endian) -> planes in [0, 1].
static void rows_to_planes(Image *im, const PngRead *r, int C, int bits) {
    size_t HW = (size_t)im->H * (size_t)im->W;
    for (int y = 0; y < im->H; y++) {
        const unsigned char *p = r->rows[y];
        float *o = im->data + (size_t)y * (size_t)im->W;
        for (int x = 0; x < im->W; x++)
            for (int c = 0; c < C; c++) {
                float v = bits == 16 ? (float)((p[0] << 8) | p[1]) * (1.0f / 65535.0f) : (float)p[0] * (1.0f / 255.0f);
                o[(size_t)c * HW + (size_t)x] = v;
                p += bits / 8;
            }
    }
}

// Decodes buf into im (im may be NULL: text only); with keyword, *text gets that text chunk's
// value (malloc'd) if present. The two halves of the function are the setjmp-protected decode
// and the error path it jumps to.
static int decode(PngRead *r, const char *src, Image *im, const char *keyword, char **text, char *err, size_t errlen) {
    if (im) memset(im, 0, sizeof(*im));
    if (r->len < 8 || png_sig_cmp(r->buf, 0, 8) != 0)
        return errf(err, errlen, "%s: not a PNG file (%s)", src, r->len < 8 ? "shorter than the 8-byte signature" : "no PNG signature");
    r->png = png_create_read_struct(PNG_LIBPNG_VER_STRING, &r->msg, on_error, on_warning);
    if (r->png) r->info = png_create_info_struct(r->png);
    if (!r->png || !r->info) {
        read_cleanup(r);
        return errf(err, errlen, "%s: cannot create a libpng reader (out of memory)", src);
    }
    if (setjmp(png_jmpbuf(r->png))) {
        read_cleanup(r);
        if (im) image_free(im);
        if (text) free(*text), *text = NULL;
        return errf(err, errlen, "%s: %s", src, r->msg.error);
    }
    png_set_user_limits(r->png, IMAGE_MAX_SIDE, IMAGE_MAX_SIDE);
#ifdef FUZZING_BUILD_MODE_UNSAFE_FOR_PRODUCTION
    // let mutated files past the checksums so the fuzzer reaches the decoding behind them
    png_set_crc_action(r->png, PNG_CRC_QUIET_USE, PNG_CRC_QUIET_USE);
    png_set_option(r->png, PNG_IGNORE_ADLER32, PNG_OPTION_ON);
#endif
    png_set_read_fn(r->png, r, read_mem);
    png_read_info(r->png, r->info);
    png_uint_32 W, H;
    int depth, ctype;
    png_get_IHDR(r->png, r->info, &W, &H, &depth, &ctype, NULL, NULL, NULL);
    if (image_check_size((int)W, (int)H, src, err, errlen) != 0) {
        read_cleanup(r);
        return -1;
    }
    double raw = (double)H * (double)png_get_rowbytes(r->png, r->info);
    if (raw > (double)DEFLATE_MAX_RATIO * (double)r->len + 4096) {
        read_cleanup(r);
        return errf(err, errlen, "%s: the header claims %ux%u pixels (%.0f bytes of scanlines) but the file has only %zu bytes, "
                    "more than deflate can expand; the file is truncated or its header corrupt", src, W, H, raw, r->len);
    }

    if (ctype == PNG_COLOR_TYPE_PALETTE) png_set_palette_to_rgb(r->png);
    if (ctype == PNG_COLOR_TYPE_GRAY && depth < 8) png_set_expand_gray_1_2_4_to_8(r->png);
    if ((ctype & PNG_COLOR_MASK_ALPHA) || png_get_valid(r->png, r->info, PNG_INFO_tRNS)) png_set_strip_alpha(r->png);
    png_set_interlace_handling(r->png);
    png_read_update_info(r->png, r->info);
    int C = png_get_channels(r->png, r->info), bits = png_get_bit_depth(r->png, r->info);
    size_t rowbytes = png_get_rowbytes(r->png, r->info);
    if ((C != 1 && C != 3) || (bits != 8 && bits != 16) || rowbytes != (size_t)W * (size_t)C * (size_t)(bits / 8))
        png_error(r->png, "unexpected layout after libpng's transformations (a bug in png.c)");

    r->pix = xmalloc((size_t)H * rowbytes);
    r->rows = xmalloc((size_t)H * sizeof(png_bytep));
    for (png_uint_32 y = 0; y < H; y++) r->rows[y] = r->pix + (size_t)y * rowbytes;
    png_read_image(r->png, r->rows);
    png_read_end(r->png, r->info);  // checks the chunks after the image through IEND; collects late text

    if (keyword && text) {
        png_textp t;
        int n = png_get_text(r->png, r->info, &t, NULL);
        for (int i = 0; i < n && !*text; i++)
            if (strcmp(t[i].key, keyword) == 0) *text = xstrdup(t[i].text ? t[i].text : "");
    }
    if (im) {
        if (image_alloc(im, C, (int)H, (int)W) != 0) png_error(r->png, "image_alloc refused a checked size (a bug)");
        im->bits = bits;
        rows_to_planes(im, r, C, bits);
    }
    read_cleanup(r);
    return 0;
}

int png_decode(const unsigned char *buf, size_t len, const char *src, Image *im, char *err, size_t errlen) {
    PngRead r = {.buf = buf, .len = len};
    return decode(&r, src, im, NULL, NULL, err, errlen);
}

int image_decode_png(const void *buf, size_t len, Image *im, char *err, size_t errlen) {
    return png_decode(buf, len, "PNG buffer", im, err, errlen);
}

int image_read_png(const char *path, Image *im, char *err, size_t errlen) {
    return image_read_with(path, png_decode, im, err, errlen);
}

char *image_read_png_text(const char *path, const char *keyword) {
    size_t len;
    unsigned char *buf = image_slurp(path, &len, NULL, 0);
    if (!buf) return NULL;
    PngRead r = {.buf = buf, .len = len};
    char *text = NULL;
    int rc = decode(&r, "PNG", NULL, keyword, &text, NULL, 0);
    free(buf);
    return rc == 0 ? text : NULL;
}

// ---------------------------------------------------------------- writing

typedef struct {
    png_structp png;
    png_infop info;
    unsigned char *buf;  // the encoded file, written out atomically at the end
    size_t len, cap;
    unsigned char *row;  // (W * C * bits/8) one interleaved scanline
    PngMsg msg;
} PngWrite;

static void write_mem(png_structp png, png_bytep data, size_t n) {
    PngWrite *w = png_get_io_ptr(png);
    if (n > w->cap - w->len) {
        w->cap = (w->len + n) * 2;
        w->buf = xrealloc(w->buf, w->cap);
    }
    memcpy(w->buf + w->len, data, n);
    w->len += n;
}

static void flush_mem(png_structp png) { (void)png; }

static void write_cleanup(PngWrite *w) {
    if (w->png) png_destroy_write_struct(&w->png, w->info ? &w->info : NULL);
    free(w->buf);
    free(w->row);
    w->png = NULL, w->info = NULL, w->buf = NULL, w->row = NULL;
}

static int valid_utf8(const unsigned char *s) {
    while (*s) {
        int n = *s < 0x80 ? 0 : (*s & 0xe0) == 0xc0 ? 1 : (*s & 0xf0) == 0xe0 ? 2 : (*s & 0xf8) == 0xf0 ? 3 : -1;
        if (n < 0 || (n == 1 && *s < 0xc2) || (n == 3 && *s > 0xf4)) return 0;
        s++;
        for (int i = 0; i < n; i++, s++)
            if ((*s & 0xc0) != 0x80) return 0;
    }
    return 1;
}

static unsigned quantize(float v, unsigned maxv) {
    if (!(v > 0.0f)) return 0;  // NaN too
    if (v >= 1.0f) return maxv;
    return (unsigned)((double)v * maxv + 0.5);
}

static void fill_row(unsigned char *row, const Image *im, int y, int bits) {
    size_t HW = (size_t)im->H * (size_t)im->W;
    const float *p = im->data + (size_t)y * (size_t)im->W;
    for (int x = 0; x < im->W; x++)
        for (int c = 0; c < im->C; c++) {
            float v = p[(size_t)c * HW + (size_t)x];
            if (bits == 16) {
                unsigned q = quantize(v, 65535);
                *row++ = (unsigned char)(q >> 8);
                *row++ = (unsigned char)q;
            } else {
                *row++ = (unsigned char)quantize(v, 255);
            }
        }
}

static int encode(PngWrite *w, const Image *im, int bits, const char *json, const char *path, char *err, size_t errlen) {
    w->png = png_create_write_struct(PNG_LIBPNG_VER_STRING, &w->msg, on_error, on_warning);
    if (w->png) w->info = png_create_info_struct(w->png);
    if (!w->png || !w->info) return errf(err, errlen, "file %s: cannot create a libpng writer (out of memory)", path);
    if (setjmp(png_jmpbuf(w->png))) return errf(err, errlen, "file %s: libpng: %s", path, w->msg.error);
    png_set_write_fn(w->png, w, write_mem, flush_mem);
    png_set_IHDR(w->png, w->info, (png_uint_32)im->W, (png_uint_32)im->H, bits, im->C == 1 ? PNG_COLOR_TYPE_GRAY : PNG_COLOR_TYPE_RGB,
                 PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
    if (json) {
        png_text t = {.compression = PNG_ITXT_COMPRESSION_NONE, .key = PNG_TEXT_KEY, .text = (char *)json,
                      .text_length = 0, .itxt_length = strlen(json), .lang = "", .lang_key = ""};
        png_set_text(w->png, w->info, &t, 1);
    }
    png_write_info(w->png, w->info);
    w->row = xmalloc((size_t)im->W * (size_t)im->C * (size_t)(bits / 8));
    for (int y = 0; y < im->H; y++) {
        fill_row(w->row, im, y, bits);
        png_write_row(w->png, w->row);
    }
    png_write_end(w->png, NULL);
    return 0;
}

int image_write_png(const char *path, const Image *im, int bits, const char *generation_json, char *err, size_t errlen) {
    if (!im || !im->data || (im->C != 1 && im->C != 3) || image_check_size(im->W, im->H, "image", NULL, 0) != 0)
        return errf(err, errlen, "file %s: cannot write an image of %d channels, %dx%d (want 1 or 3 channels within the size limits)",
                    path, im ? im->C : 0, im ? im->W : 0, im ? im->H : 0);
    if (bits != 8 && bits != 16) return errf(err, errlen, "file %s: cannot write %d-bit PNG (want 8 or 16)", path, bits);
    if (generation_json && !valid_utf8((const unsigned char *)generation_json))
        return errf(err, errlen, "file %s: the generation text is not valid UTF-8", path);
    PngWrite w = {0};
    int rc = encode(&w, im, bits, generation_json, path, err, errlen);
    if (rc == 0) rc = write_file_atomic(path, w.buf, w.len, err, errlen);
    write_cleanup(&w);
    return rc;
}

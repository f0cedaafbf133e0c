// bmp.c: a strict reader for the plain BMPs image tools write: a BITMAPINFOHEADER (or its V4/V5
// extensions), uncompressed (BI_RGB) 24-bit BGR, 32-bit BGRX (the fourth byte ignored) or 8-bit
// palette, bottom-up or top-down rows. An 8-bit file whose palette is all grays gives a 1-channel
// image. Every size and offset in the headers is checked against the file length before use, and
// every palette index against the palette; anything else (RLE, bitfields, 1/4/16-bit, OS/2
// headers) is refused with a message.
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "image/image_internal.h"

#define FILE_HEADER 14

typedef struct {
    uint32_t file_size, offset, info_size, compression, image_size, colors;
    int32_t width, height;
    int planes, bpp;
} BmpHeader;

static uint32_t u32le(const unsigned char *p) { return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24; }
static int u16le(const unsigned char *p) { return p[0] | p[1] << 8; }

static void parse_header(BmpHeader *h, const unsigned char *b) {
    h->file_size = u32le(b + 2);
    h->offset = u32le(b + 10);
    h->info_size = u32le(b + 14);
    h->width = (int32_t)u32le(b + 18);
    h->height = (int32_t)u32le(b + 22);
    h->planes = u16le(b + 26);
    h->bpp = u16le(b + 28);
    h->compression = u32le(b + 30);
    h->image_size = u32le(b + 34);
    h->colors = u32le(b + 46);
}

// Checks the headers against each other and the file length; the palette size (0 without one)
// and the row stride, or -1 and a message.
static int check_header(const BmpHeader *h, size_t len, const char *src, int *ncolors, size_t *stride, char *err, size_t errlen) {
    if (h->file_size != len)
        return errf(err, errlen, "%s: the header gives the file size as %u bytes but it has %zu (truncated or padded)", src, h->file_size, len);
    if (h->info_size != 40 && h->info_size != 52 && h->info_size != 56 && h->info_size != 108 && h->info_size != 124)
        return errf(err, errlen, "%s: info header of %u bytes is not a BITMAPINFOHEADER (40) or a V2-V5 extension of it", src, h->info_size);
    if ((size_t)FILE_HEADER + h->info_size > len) return errf(err, errlen, "%s: the %u-byte info header runs past the end of the file", src, h->info_size);
    if (h->planes != 1) return errf(err, errlen, "%s: %d colour planes (must be 1)", src, h->planes);
    if (h->bpp != 8 && h->bpp != 24 && h->bpp != 32)
        return errf(err, errlen, "%s: %d bits per pixel is not supported (want 8, 24 or 32)", src, h->bpp);
    if (h->compression != 0) return errf(err, errlen, "%s: compression type %u is not supported (only uncompressed BI_RGB)", src, h->compression);
    if (h->width <= 0 || h->height == 0 || h->height == INT32_MIN)
        return errf(err, errlen, "%s: invalid size %d x %d in the header", src, (int)h->width, (int)h->height);
    int H = h->height < 0 ? -h->height : h->height;
    if (image_check_size(h->width, H, src, err, errlen) != 0) return -1;
    if (h->colors > 256) return errf(err, errlen, "%s: the header claims %u palette colours (at most 256)", src, h->colors);
    *ncolors = h->bpp == 8 && h->colors == 0 ? 256 : (int)h->colors;  // 0 means "all 2^bpp" for a palette image
    size_t palette_end = (size_t)FILE_HEADER + h->info_size + 4 * (size_t)*ncolors;
    if (palette_end > h->offset)
        return errf(err, errlen, "%s: the headers%s end at byte %zu, past the pixel data offset %u", src,
                    *ncolors ? " and palette" : "", palette_end, h->offset);
    *stride = ((size_t)h->width * (size_t)h->bpp + 31) / 32 * 4;
    size_t need = *stride * (size_t)H;
    if (h->offset > len || need > len - h->offset)
        return errf(err, errlen, "%s: %d x %d pixels need %zu bytes from offset %u but the file has %zu", src, (int)h->width, H, need, h->offset, len);
    if (h->image_size != 0 && (h->image_size < need || h->image_size > len - h->offset))
        return errf(err, errlen, "%s: the header's image size %u bytes disagrees with %zu bytes of rows and the file length %zu", src, h->image_size, need, len);
    return 0;
}

static int palette_is_gray(const unsigned char *pal, int n) {
    for (int i = 0; i < n; i++)
        if (pal[4 * i] != pal[4 * i + 1] || pal[4 * i] != pal[4 * i + 2]) return 0;
    return 1;
}

// Copies row `row` (file byte layout) into image row y; -1 on a palette index out of range.
static int convert_row(Image *im, int y, const unsigned char *row, int bpp, const unsigned char *pal, int ncolors) {
    size_t HW = (size_t)im->H * (size_t)im->W;
    float *o = im->data + (size_t)y * (size_t)im->W;
    for (int x = 0; x < im->W; x++) {
        const unsigned char *bgr;
        if (bpp == 8) {
            if (row[x] >= ncolors) return -1;
            bgr = pal + 4 * row[x];
        } else {
            bgr = row + (size_t)x * (size_t)(bpp / 8);
        }
        if (im->C == 1) {
            o[x] = bgr[0] * (1.0f / 255.0f);
        } else {
            o[x] = bgr[2] * (1.0f / 255.0f);
            o[HW + (size_t)x] = bgr[1] * (1.0f / 255.0f);
            o[2 * HW + (size_t)x] = bgr[0] * (1.0f / 255.0f);
        }
    }
    return 0;
}

int bmp_decode(const unsigned char *buf, size_t len, const char *src, Image *im, char *err, size_t errlen) {
    memset(im, 0, sizeof(*im));
    if (len < 2 || buf[0] != 'B' || buf[1] != 'M') return errf(err, errlen, "%s: not a BMP file (no 'BM' signature)", src);
    if (len < FILE_HEADER + 40) return errf(err, errlen, "%s: %zu bytes is shorter than the BMP headers (54 bytes)", src, len);
    BmpHeader h;
    parse_header(&h, buf);
    int ncolors = 0;
    size_t stride = 0;
    if (check_header(&h, len, src, &ncolors, &stride, err, errlen) != 0) return -1;
    const unsigned char *pal = buf + FILE_HEADER + h.info_size;
    int H = h.height < 0 ? -h.height : h.height, C = h.bpp == 8 && palette_is_gray(pal, ncolors) ? 1 : 3;
    if (image_alloc(im, C, H, h.width) != 0) return errf(err, errlen, "%s: cannot allocate %d x %d", src, (int)h.width, H);
    for (int y = 0; y < H; y++) {
        const unsigned char *row = buf + h.offset + stride * (size_t)(h.height > 0 ? H - 1 - y : y);
        if (convert_row(im, y, row, h.bpp, pal, ncolors) != 0) {
            image_free(im);
            return errf(err, errlen, "%s: a pixel in row %d uses palette index beyond the %d colours", src, y, ncolors);
        }
    }
    return 0;
}

int image_read_bmp(const char *path, Image *im, char *err, size_t errlen) {
    return image_read_with(path, bmp_decode, im, err, errlen);
}

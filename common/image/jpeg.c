// jpeg.c: JPEG reading through libjpeg-turbo (the libjpeg 6.2 API), gray or RGB, baseline or
// progressive, with libjpeg's defaults (accurate integer IDCT, smooth chroma upsampling) so the
// pixels match what PIL decodes from the same file.
//
// Strictness: libjpeg, left alone, prints a warning and goes on when data are corrupt or cut
// short (it pads a truncated file with grey). Here every such warning is an error, so a
// truncated file, a corrupt entropy-coded segment or junk before a marker is refused with
// libjpeg's message; only warnings about metadata we do not use (an unknown JFIF revision or
// Adobe transform code, a bad ICC marker) are ignored. CMYK and YCCK files are refused: doppel's
// spectrograms are gray or RGB, and a CMYK conversion without the file's ICC profile would be a
// guess. Bytes after the EOI marker are ignored, as every decoder does.
//
// libjpeg reports errors by calling error_exit, which here longjmps back to decode(); the state
// to free lives in a JpegRead reached through a pointer so it survives the jump.
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jerror.h>
#include <jpeglib.h>

#include "check.h"
#include "image/image_internal.h"

// libjpeg's own working memory (progressive files keep every coefficient of the image): enough
// for the largest image within IMAGE_MAX_PIXELS (3 components x 2 bytes a coefficient).
#define JPEG_MAX_MEMORY ((long)IMAGE_MAX_PIXELS * 6 + (64L << 20))

typedef struct {
    struct jpeg_error_mgr pub;  // first, so a j_common_ptr's err is a JpegErr
    jmp_buf jmp;
    char msg[JMSG_LENGTH_MAX];
} JpegErr;

typedef struct {
    struct jpeg_decompress_struct cinfo;
    JpegErr err;
    int created;
    unsigned char *row;  // (W * C) one decoded scanline
} JpegRead;

static void on_error_exit(j_common_ptr cinfo) {
    JpegErr *e = (JpegErr *)cinfo->err;
    (*cinfo->err->format_message)(cinfo, e->msg);
    longjmp(e->jmp, 1);
}

static void on_message(j_common_ptr cinfo, int level) {
    if (level >= 0) return;  // trace messages
    int code = cinfo->err->msg_code;
    if (code == JWRN_JFIF_MAJOR || code == JWRN_ADOBE_XFORM || code == JWRN_BOGUS_ICC) return;
    on_error_exit(cinfo);
}

static void read_cleanup(JpegRead *r) {
    if (r->created) jpeg_destroy_decompress(&r->cinfo);
    free(r->row);
    r->created = 0, r->row = NULL;
}

// Sets the output colour space from the file's; the number of channels, or -1 and a message.
static int choose_output(JpegRead *r, const char *src, char *err, size_t errlen) {
    switch (r->cinfo.jpeg_color_space) {
        case JCS_GRAYSCALE: r->cinfo.out_color_space = JCS_GRAYSCALE; return 1;
        case JCS_YCbCr:
        case JCS_RGB: r->cinfo.out_color_space = JCS_RGB; return 3;
        case JCS_CMYK:
        case JCS_YCCK: return errf(err, errlen, "%s: CMYK/YCCK JPEGs are not supported (convert it to RGB first)", src);
        default: return errf(err, errlen, "%s: unknown JPEG colour space %d with %d components", src, (int)r->cinfo.jpeg_color_space, r->cinfo.num_components);
    }
}

static int decode(JpegRead *r, const unsigned char *buf, size_t len, const char *src, Image *im, char *err, size_t errlen) {
    memset(im, 0, sizeof(*im));
    if (len < 3 || buf[0] != 0xff || buf[1] != 0xd8 || buf[2] != 0xff)
        return errf(err, errlen, "%s: not a JPEG file (it does not start with an SOI marker)", src);
    r->cinfo.err = jpeg_std_error(&r->err.pub);
    r->err.pub.error_exit = on_error_exit;
    r->err.pub.emit_message = on_message;
    if (setjmp(r->err.jmp)) {
        read_cleanup(r);
        image_free(im);
        return errf(err, errlen, "%s: %s", src, r->err.msg);
    }
    jpeg_create_decompress(&r->cinfo);
    r->created = 1;
    r->cinfo.mem->max_memory_to_use = JPEG_MAX_MEMORY;
    jpeg_mem_src(&r->cinfo, buf, (unsigned long)len);
    jpeg_read_header(&r->cinfo, TRUE);
    int W = (int)r->cinfo.image_width, H = (int)r->cinfo.image_height, C;
    if (image_check_size(W, H, src, err, errlen) != 0 || (C = choose_output(r, src, err, errlen)) < 0) {
        read_cleanup(r);
        return -1;
    }
    jpeg_start_decompress(&r->cinfo);
    if ((int)r->cinfo.output_width != W || (int)r->cinfo.output_height != H || r->cinfo.output_components != C)
        ERREXIT(&r->cinfo, JERR_NOTIMPL);  // cannot happen without scaling; a bug if it does
    if (image_alloc(im, C, H, W) != 0) ERREXIT(&r->cinfo, JERR_NOTIMPL);
    r->row = xmalloc((size_t)W * (size_t)C);
    size_t HW = (size_t)H * (size_t)W;
    while (r->cinfo.output_scanline < r->cinfo.output_height) {
        size_t y = r->cinfo.output_scanline;
        JSAMPROW rp = r->row;
        if (jpeg_read_scanlines(&r->cinfo, &rp, 1) != 1) ERREXIT(&r->cinfo, JERR_INPUT_EMPTY);
        float *o = im->data + y * (size_t)W;
        for (int x = 0; x < W; x++)
            for (int c = 0; c < C; c++) o[(size_t)c * HW + (size_t)x] = (float)r->row[(size_t)x * (size_t)C + (size_t)c] * (1.0f / 255.0f);
    }
    jpeg_finish_decompress(&r->cinfo);  // reads on to EOI: a file cut off after the last scanline is still refused
    im->bits = 8;
    read_cleanup(r);
    return 0;
}

int jpeg_decode(const unsigned char *buf, size_t len, const char *src, Image *im, char *err, size_t errlen) {
    JpegRead r;
    memset(&r, 0, sizeof(r));
    return decode(&r, buf, len, src, im, err, errlen);
}

int image_decode_jpeg(const void *buf, size_t len, Image *im, char *err, size_t errlen) {
    return jpeg_decode(buf, len, "JPEG buffer", im, err, errlen);
}

int image_read_jpeg(const char *path, Image *im, char *err, size_t errlen) {
    return image_read_with(path, jpeg_decode, im, err, errlen);
}

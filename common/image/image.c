// image.c: Image allocation, the size limit every reader applies, and image_read's dispatch by
// file extension. The formats live in png.c, jpeg.c and bmp.c.
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#include "check.h"
#include "image/image_internal.h"

void image_free(Image *im) {
    if (!im) return;
    free(im->data);
    memset(im, 0, sizeof(*im));
}

int image_alloc(Image *im, int C, int H, int W) {
    memset(im, 0, sizeof(*im));
    if ((C != 1 && C != 3) || image_check_size(W, H, "image_alloc", NULL, 0) != 0) return -1;
    im->data = xcalloc((size_t)C * (size_t)H * (size_t)W, sizeof(float));
    im->C = C, im->H = H, im->W = W, im->bits = 8;
    return 0;
}

int image_check_size(int W, int H, const char *src, char *err, size_t errlen) {
    if (W <= 0 || H <= 0) return errf(err, errlen, "%s: image size %dx%d is empty", src, W, H);
    if (W > IMAGE_MAX_SIDE || H > IMAGE_MAX_SIDE || (size_t)W * (size_t)H > IMAGE_MAX_PIXELS)
        return errf(err, errlen, "%s: image size %dx%d is beyond the limit (%d pixels a side, %zu in all); "
                    "the header is corrupt or the image needs resizing elsewhere first",
                    src, W, H, IMAGE_MAX_SIDE, IMAGE_MAX_PIXELS);
    return 0;
}

int image_read_with(const char *path, ImageDecoder dec, Image *im, char *err, size_t errlen) {
    memset(im, 0, sizeof(*im));
    size_t len;
    unsigned char *buf = image_slurp(path, &len, err, errlen);
    if (!buf) return -1;
    char src[1100];
    snprintf(src, sizeof(src), "file %s", path);
    int rc = dec(buf, len, src, im, err, errlen);
    free(buf);
    return rc;
}

unsigned char *image_slurp(const char *path, size_t *len, char *err, size_t errlen) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        errf(err, errlen, "file %s: cannot open: %s", path, strerror(errno));
        return NULL;
    }
    struct stat sb;
    if (fstat(fileno(f), &sb) != 0 || !S_ISREG(sb.st_mode)) {
        errf(err, errlen, "file %s: not a regular file", path);
        fclose(f);
        return NULL;
    }
    // the largest 8-bit RGB image within the limits, stored raw, plus room for metadata
    const size_t max_len = IMAGE_MAX_PIXELS * 4 + (64u << 20);
    if ((unsigned long long)sb.st_size > max_len) {
        errf(err, errlen, "file %s: %lld bytes is too large for an image within the limits", path, (long long)sb.st_size);
        fclose(f);
        return NULL;
    }
    *len = (size_t)sb.st_size;
    unsigned char *buf = xmalloc(*len);
    size_t got = fread(buf, 1, *len, f);
    int rerr = ferror(f);
    fclose(f);
    if (got != *len) {
        errf(err, errlen, "file %s: read %zu of %zu bytes%s", path, got, *len, rerr ? " (I/O error)" : " (file changed while reading?)");
        free(buf);
        return NULL;
    }
    return buf;
}

static int has_ext(const char *path, const char *ext) {
    size_t n = strlen(path), e = strlen(ext);
    return n > e && strcasecmp(path + n - e, ext) == 0;
}

int image_read(const char *path, Image *im, char *err, size_t errlen) {
    memset(im, 0, sizeof(*im));
    if (has_ext(path, ".png")) return image_read_png(path, im, err, errlen);
    if (has_ext(path, ".jpg") || has_ext(path, ".jpeg")) return image_read_jpeg(path, im, err, errlen);
    if (has_ext(path, ".bmp")) return image_read_bmp(path, im, err, errlen);
    return errf(err, errlen, "file %s: unknown image type (the name should end in .png, .jpg, .jpeg or .bmp)", path);
}

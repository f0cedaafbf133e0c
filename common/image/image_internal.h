// image_internal.h: what the image readers share (not part of the public API in image.h).
// Every reader names its source in messages as "file <path>" or "<FORMAT> buffer", the way
// io/safetensors does, so a message always says which input was bad.
#pragma once
#include <stddef.h>

#include "image/image.h"

// The largest image any reader accepts: a header claiming more is treated as corrupt rather than
// allocated (a few bytes must not be able to ask for gigabytes). 8192 x 8192 x 3 floats = 768 MiB.
#define IMAGE_MAX_SIDE 16384
#define IMAGE_MAX_PIXELS ((size_t)8192 * 8192)

// 0 if W x H is a size the readers accept; else -1 and "<src>: ..." in err.
int image_check_size(int W, int H, const char *src, char *err, size_t errlen);

// Reads a whole file (images are small); malloc'd, *len set. NULL and "file <path>: ..." on failure.
unsigned char *image_slurp(const char *path, size_t *len, char *err, size_t errlen);
// a decoder of whole files in memory; src names the input in messages ("file PATH")
typedef int (*ImageDecoder)(const unsigned char *buf, size_t len, const char *src, Image *im, char *err, size_t errlen);
// reads PATH into memory and decodes it with dec
int image_read_with(const char *path, ImageDecoder dec, Image *im, char *err, size_t errlen);

// The decoders behind image_read_* and image_decode_*: src is the name used in messages.
int png_decode(const unsigned char *buf, size_t len, const char *src, Image *im, char *err, size_t errlen);
int jpeg_decode(const unsigned char *buf, size_t len, const char *src, Image *im, char *err, size_t errlen);
int bmp_decode(const unsigned char *buf, size_t len, const char *src, Image *im, char *err, size_t errlen);

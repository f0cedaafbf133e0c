// image.h: images as float32 planes (C, H, W) in [0, 1]; PNG via libpng, JPEG via libjpeg-turbo,
// resizing, and colour maps (jet, viridis) forward and inverse.
// Readers never abort on bad files: -1 and a message naming the file and the problem.
#pragma once
#include <stddef.h>
#include <stdint.h>

typedef struct {
    int C, H, W;   // C = 1 (gray) or 3 (RGB); alpha is dropped, palettes expanded
    float *data;   // (C, H, W), values in [0, 1]
    int bits;      // bits per sample of the source (8 or 16)
} Image;

void image_free(Image *im);
int image_alloc(Image *im, int C, int H, int W);
// by extension: .png, .jpg/.jpeg, .bmp (24-bit uncompressed and 8-bit gray/palette BMPs)
int image_read(const char *path, Image *im, char *err, size_t errlen);
int image_read_png(const char *path, Image *im, char *err, size_t errlen);
int image_read_jpeg(const char *path, Image *im, char *err, size_t errlen);
int image_read_bmp(const char *path, Image *im, char *err, size_t errlen);
// decodes from memory (used by the fuzz targets and tests)
int image_decode_png(const void *buf, size_t len, Image *im, char *err, size_t errlen);
int image_decode_jpeg(const void *buf, size_t len, Image *im, char *err, size_t errlen);
// writes C = 1 (gray) or 3 (RGB) at 8 or 16 bits; generation_json (may be NULL) goes into an iTXt
// chunk with keyword "generation"; atomic (temporary file + rename)
int image_write_png(const char *path, const Image *im, int bits, const char *generation_json, char *err,
                    size_t errlen);
// reads the iTXt "generation" chunk back (malloc'd string, NULL if absent)
char *image_read_png_text(const char *path, const char *keyword);

typedef enum { RESIZE_AUTO, RESIZE_AREA, RESIZE_BILINEAR, RESIZE_LANCZOS } ResizeMode;
// AUTO: area when shrinking, bilinear when growing (per axis)
int image_resize(const Image *src, Image *dst, int H, int W, ResizeMode mode);

typedef enum { CMAP_JET, CMAP_VIRIDIS, CMAP_GRAY } Colormap;
int colormap_parse(const char *name, Colormap *out);  // "jet", "viridis", "gray"; -1 otherwise
const char *colormap_name(Colormap c);
void colormap_apply(Colormap c, float v, float rgb[3]);  // v in [0, 1] (clamped)
// RGB (3, H, W) -> magnitude (1, H, W) by the nearest colour of the map (a 256-entry table over
// the map with sub-step refinement), robust to JPEG noise
int colormap_invert(Colormap c, const Image *rgb, Image *gray);
// magnitude (1, H, W) -> RGB (3, H, W)
int colormap_render(Colormap c, const Image *gray, Image *rgb);
// guesses whether an RGB image is drawn with the map: fraction of pixels within tol of the map
double colormap_fit(Colormap c, const Image *rgb, float tol);

// ---- grids (grid.c) ----
// Draws one (C, H, W) image in [-1, 1] into the RGB canvas out at (top, left), scaled by f
// (nearest): 1 channel through cmap, 3 channels as RGB, otherwise the first channel through cmap.
void image_draw_tile(Image *out, int top, int left, const float *x, int C, int H, int W, int f, Colormap cmap);
// rows x cols tiles (rows*cols, C, H, W) in [-1, 1], row-major, on white, gap pixels apart,
// scaled up by the smallest integer that makes a tile at least min_tile pixels; present
// (rows*cols, may be NULL) leaves tiles with 0 blank. Allocates out (RGB).
int image_grid(Image *out, const float *tiles, const int *present, int rows, int cols, int C, int H, int W, Colormap cmap,
               int min_tile, int gap);

// grid.c: pictures of many spectrograms at once (sample grids, real vs generated).
#include <math.h>

#include "image.h"

void image_draw_tile(Image *out, int top, int left, const float *x, int C, int H, int W, int f, Colormap cmap) {
    size_t plane = (size_t)out->H * out->W;
    for (int i = 0; i < H * f; i++)
        for (int j = 0; j < W * f; j++) {
            size_t src = (size_t)(i / f) * W + j / f;
            float rgb[3];
            if (C == 3) {
                for (int ch = 0; ch < 3; ch++) rgb[ch] = fminf(fmaxf(0.5f * (x[ch * (size_t)H * W + src] + 1.0f), 0.0f), 1.0f);
            } else {
                colormap_apply(cmap, 0.5f * (x[src] + 1.0f), rgb);
            }
            size_t dst = (size_t)(top + i) * out->W + left + j;
            for (int ch = 0; ch < 3; ch++) out->data[ch * plane + dst] = rgb[ch];
        }
}

int image_grid(Image *out, const float *tiles, const int *present, int rows, int cols, int C, int H, int W, Colormap cmap,
               int min_tile, int gap) {
    if (rows < 1 || cols < 1) return -1;
    int f = 1;
    while (H * f < min_tile || W * f < min_tile) f++;
    int TH = H * f, TW = W * f;
    if (image_alloc(out, 3, rows * TH + (rows - 1) * gap, cols * TW + (cols - 1) * gap)) return -1;
    for (size_t i = 0; i < 3 * (size_t)out->H * out->W; i++) out->data[i] = 1.0f;
    size_t per = (size_t)C * H * W;
    for (int r = 0; r < rows; r++)
        for (int k = 0; k < cols; k++) {
            size_t t = (size_t)r * cols + k;
            if (present && !present[t]) continue;
            image_draw_tile(out, r * (TH + gap), k * (TW + gap), tiles + t * per, C, H, W, f, cmap);
        }
    return 0;
}

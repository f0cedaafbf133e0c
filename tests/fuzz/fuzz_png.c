// fuzz_png.c: libFuzzer target for the PNG decoder (image_decode_png). Any input must either
// decode to a well-formed image (1 or 3 channels, 8 or 16 bits, every value in [0, 1]) or fail with
// a message and leave the Image empty; sanitizers catch the rest. The define makes png.c skip CRC
// and Adler-32 checks so mutations get past them. Seeds: tests/corpus/images/*.png.
//   clang -std=gnu11 -g -O1 -D_GNU_SOURCE -DFUZZING_BUILD_MODE_UNSAFE_FOR_PRODUCTION -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined -Icommon \
//       tests/fuzz/fuzz_png.c common/image/*.c common/io/fileio.c common/check.c -lpng -ljpeg -lm -o build/fuzz/fuzz_png

#include <stdint.h>
#include <stdlib.h>

#include "image/image.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    Image im;
    char err[512];
    err[0] = 0;
    if (image_decode_png(data, size, &im, err, sizeof(err)) != 0) {
        if (!err[0] || im.data || im.C || im.H || im.W || im.bits) abort();  // rejected silently or left state behind
        return 0;
    }
    if ((im.C != 1 && im.C != 3) || im.H <= 0 || im.W <= 0 || (im.bits != 8 && im.bits != 16) || !im.data) abort();
    size_t n = (size_t)im.C * (size_t)im.H * (size_t)im.W;
    for (size_t i = 0; i < n; i++)
        if (!(im.data[i] >= 0.0f && im.data[i] <= 1.0f)) abort();
    image_free(&im);
    return 0;
}

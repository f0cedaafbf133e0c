// fuzz_frame.c: libFuzzer target for the protocol-v1 frame decoder (`make fuzz`).
// Any input must either decode into a frame whose every field is in range and whose tensors lie
// inside the input, or fail with a message and leave the Frame empty; sanitizers catch the rest.
// An accepted frame must also survive re-encoding and decode to the same tensors.
#include <stdlib.h>
#include <string.h>

#include "wire/frame.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    Frame f;
    char err[512];
    err[0] = 0;
    if (frame_decode(&f, data, size, NULL, err, sizeof(err)) != 0) {
        static const Frame zero;
        if (!err[0] || memcmp(&f, &zero, sizeof(f)) != 0) abort();  // rejected silently or left state behind
        frame_release(&f);
        return 0;
    }
    if (f.n_tensors < 0 || f.n_tensors > WIRE_MAX_TENSORS || strlen(f.stream) > WIRE_MAX_NAME) abort();
    if (f.meta && !json_is_object(f.meta)) abort();
    for (int i = 0; i < f.n_tensors; i++) {
        const WireTensor *t = &f.tensors[i];
        const uint8_t *p = t->data;
        if (t->nbytes != t->numel * wire_dtype_size(t->dtype) || p < data || p + t->nbytes > data + size) abort();
        if (frame_tensor(&f, t->name) != t || t->ndim < 0 || t->ndim > WIRE_MAX_DIMS) abort();
        float *out = malloc(t->numel ? t->numel * sizeof(float) : 1);
        if (!out) abort();
        wire_tensor_f32(out, t);
        free(out);
    }
    (void)frame_check_batch(&f, err, sizeof(err));
    void *enc;
    size_t len;
    Frame g;
    if (frame_encode(&f, &enc, &len, err, sizeof(err)) != 0) abort();  // whatever decodes, encodes
    if (frame_decode(&g, enc, len, NULL, err, sizeof(err)) != 0 || g.n_tensors != f.n_tensors || g.kind != f.kind || g.seq != f.seq) abort();
    for (int i = 0; i < g.n_tensors; i++)
        if (g.tensors[i].nbytes != f.tensors[i].nbytes || memcmp(g.tensors[i].data, f.tensors[i].data, g.tensors[i].nbytes) != 0) abort();
    if (!!f.meta != !!g.meta || (f.meta && !json_equal(f.meta, g.meta))) abort();
    frame_release(&g);
    free(enc);
    frame_release(&f);
    return 0;
}

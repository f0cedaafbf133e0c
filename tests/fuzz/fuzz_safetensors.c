// fuzz_safetensors.c: libFuzzer target for the safetensors reader (`make fuzz`).
// Any input must either parse, with every tensor convertible, or fail with a message and leave
// the SafeTensors empty; sanitizers catch the rest.
#include <stdlib.h>
#include <string.h>

#include "io/safetensors.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    SafeTensors st;
    char err[512];
    err[0] = 0;
    if (st_parse(&st, data, size, err, sizeof(err)) != 0) {
        static const SafeTensors zero;
        if (!err[0] || memcmp(&st, &zero, sizeof(st)) != 0) abort();  // rejected silently or leaked state
        st_free(&st);
        return 0;
    }
    for (int i = 0; i < st.count; i++) {
        const StTensor *t = &st.tensors[i];
        if (t->nbytes != t->numel * st_dtype_size(t->dtype) || t->offset + t->nbytes > size - st.data_start) abort();
        float *out = malloc(t->numel ? t->numel * sizeof(float) : 1);
        if (!out) abort();
        st_to_f32(out, t);
        free(out);
        if (st_find(&st, t->name) == NULL) abort();
    }
    for (int i = 0; i < st.meta_count; i++)
        if (st_meta(&st, st.meta_keys[i]) == NULL) abort();
    st_free(&st);
    return 0;
}

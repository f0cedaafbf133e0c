// embedding.c: table lookup, out (N, D) = table[ids[n]]. Backward adds (+=) into dtable;
// repeated ids accumulate. Rows are short (N is a batch), so this runs on one thread.
#include <string.h>

#include "check.h"
#include "ops/ops.h"

// out (N, D), ids (N), table (rows, D); the caller has checked ids against the table's rows
void embedding_forward(float *out, const int32_t *ids, const float *table, int N, int D) {
    for (int n = 0; n < N; n++) {
        CHECK(ids[n] >= 0, "embedding_forward: ids[%d] = %d is negative", n, (int)ids[n]);
        memcpy(out + (size_t)n * D, table + (size_t)ids[n] * D, (size_t)D * sizeof(float));
    }
}

// In the forward pass this was: out[n] = table[ids[n]]; so dtable[ids[n]] += dout[n].
void embedding_backward(float *dtable, const float *dout, const int32_t *ids, int N, int D) {
    if (!dtable) return;
    for (int n = 0; n < N; n++) {
        CHECK(ids[n] >= 0, "embedding_backward: ids[%d] = %d is negative", n, (int)ids[n]);
        float *row = dtable + (size_t)ids[n] * D;
        const float *g = dout + (size_t)n * D;
        for (int d = 0; d < D; d++) row[d] += g[d];
    }
}

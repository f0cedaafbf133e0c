// optim.cu: AdamW, EMA, gradient norm, clipping and the NaN/Inf guard on a device ParamSet, with
// the per-float updates of optim/adamw.h and optim/ema.h.
#include "cuda_common.cuh"
#include "optim/ema.h"

__global__ void adamw_kernel(float *p, float *m, float *v, const float *g, size_t n, float decay_mul, AdamWCoefs c) {
    GRID_STRIDE(i, n) adamw_update(&p[i], &m[i], &v[i], g[i], decay_mul, &c);
}

extern "C" void adamw_step_cuda(AdamW *opt, ParamSet *dev, float lr, cudaStream_t s) {
    CHECK(dev->m && dev->v, "adamw_step before adamw_init");
    opt->step++;
    const AdamWCoefs c = adamw_coefs(opt, lr, opt->step);
    int any_no_decay = 0;
    for (int i = 0; i < dev->count; i++) any_no_decay |= dev->info[i].no_decay;
    if (!any_no_decay) {  // one launch over everything (padding is zero everywhere and stays so)
        adamw_kernel<<<grid_for(dev->total), THREADS, 0, s>>>(dev->data, dev->m, dev->v, dev->grad, dev->total,
                                                              c.decay_mul, c);
        CHECK_LAUNCH();
        return;
    }
    for (int i = 0; i < dev->count; i++) {  // views one by one, each with its decay
        const ParamInfo *info = &dev->info[i];
        size_t o = info->offset;
        adamw_kernel<<<grid_for(info->numel), THREADS, 0, s>>>(dev->data + o, dev->m + o, dev->v + o, dev->grad + o,
                                                               info->numel, info->no_decay ? 1.0f : c.decay_mul, c);
        CHECK_LAUNCH();
    }
}

__global__ void ema_kernel(float *e, const float *p, size_t n, float omd) {
    GRID_STRIDE(i, n) e[i] = ema_update_one(e[i], p[i], omd);
}
extern "C" void ema_update_cuda(ParamSet *dev, float decay, cudaStream_t s) {
    CHECK(dev->ema, "ema_update before ema_init");
    ema_kernel<<<grid_for(dev->total), THREADS, 0, s>>>(dev->ema, dev->data, dev->total, (float)(1.0 - (double)decay));
    CHECK_LAUNCH();
}

// acc[0] += sum g^2 (double), acc[1] += count of non-finite values
__global__ void grad_stats(double *acc, const float *g, size_t n) {
    double s = 0, bad = 0;
    GRID_STRIDE(i, n) {
        float x = g[i];
        s += (double)x * x;
        bad += isfinite(x) ? 0.0 : 1.0;
    }
    s = block_sum(s);
    bad = block_sum(bad);
    if (threadIdx.x == 0) atomicAdd(&acc[0], s), atomicAdd(&acc[1], bad);
}
static void stats(double out[2], const ParamSet *dev, cudaStream_t s) {
    double *acc = cuda_reduce_buffer(2);
    CHECK_CUDA(cudaMemsetAsync(acc, 0, 2 * sizeof(double), s));
    unsigned gx = grid_for(dev->total);
    grad_stats<<<gx > 1024 ? 1024 : gx, THREADS, 0, s>>>(acc, dev->grad, dev->total);
    CHECK_LAUNCH();
    CHECK_CUDA(cudaMemcpyAsync(out, acc, 2 * sizeof(double), cudaMemcpyDeviceToHost, s));
    CHECK_CUDA(cudaStreamSynchronize(s));
}

extern "C" float grad_global_norm_cuda(const ParamSet *dev, cudaStream_t s) {
    double st[2];
    stats(st, dev, s);
    return st[1] > 0 ? NAN : (float)sqrt(st[0]);
}

extern "C" int grads_finite_cuda(const ParamSet *dev, cudaStream_t s) {
    double st[2];
    stats(st, dev, s);
    return st[1] == 0;
}

__global__ void scale_kernel(float *g, size_t n, float k) {
    GRID_STRIDE(i, n) g[i] *= k;
}
extern "C" void grads_scale_cuda(ParamSet *dev, float k, cudaStream_t s) {
    scale_kernel<<<grid_for(dev->total), THREADS, 0, s>>>(dev->grad, dev->total, k);
    CHECK_LAUNCH();
}

extern "C" float clip_grad_norm_cuda(ParamSet *dev, float max_norm, cudaStream_t s) {
    float total = grad_global_norm_cuda(dev, s);
    if (!isfinite(total)) return total;
    float coef = (1.0f / (total + 1e-6f)) * max_norm;  // as clip.c (torch's rounding)
    if (coef < 1.0f) grads_scale_cuda(dev, coef, s);
    return total;
}

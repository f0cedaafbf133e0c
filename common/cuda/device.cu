// device.cu: the GPU itself: probing, memory, the activation arena's memory, ParamSet mirrors,
// the cuBLAS handle and the small device buffers reductions share.
#include <string.h>

#include "cuda_common.cuh"

static cublasHandle_t handle;
static cudaDeviceProp prop;
static Precision precision = PREC_FP32;

extern "C" int cuda_probe(void) {
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess || n < 1) {
        cudaGetLastError();  // clear the sticky "no device" error
        return 0;
    }
    if (cudaSetDevice(0) != cudaSuccess || cudaGetDeviceProperties(&prop, 0) != cudaSuccess) return 0;
    return 1;
}

extern "C" const char *cuda_device_name(void) { return prop.name; }

cublasHandle_t cublas_on(cudaStream_t s) {
    if (!handle) {
        CHECK_CUBLAS(cublasCreate(&handle));
        CHECK_CUBLAS(cublasSetMathMode(handle, CUBLAS_DEFAULT_MATH));  // fp32 unless cuda_set_tf32(1)
    }
    CHECK_CUBLAS(cublasSetStream(handle, s));
    return handle;
}

extern "C" void cuda_set_precision(Precision p) {
    cublas_on(0);
    precision = p;
    CHECK_CUBLAS(cublasSetMathMode(handle, p == PREC_TF32 ? CUBLAS_TF32_TENSOR_OP_MATH : CUBLAS_DEFAULT_MATH));
}
extern "C" Precision cuda_get_precision(void) { return precision; }

extern "C" void *cuda_malloc(size_t bytes) {
    void *p = NULL;
    cudaError_t e = cudaMalloc(&p, bytes ? bytes : 1);
    if (e != cudaSuccess) {
        size_t free_b = 0, total = 0;
        cudaGetLastError();
        cudaMemGetInfo(&free_b, &total);
        DIE("out of GPU memory: %zu MB asked, %zu of %zu MB free on %s; reduce --batch or the preset", bytes >> 20,
            free_b >> 20, total >> 20, prop.name);
    }
    return p;
}

extern "C" void cuda_free(void *p) {
    if (p) CHECK_CUDA(cudaFree(p));
}
static cudaStream_t current;  // the stream host <-> device copies and zero-fills are ordered on

extern "C" cudaStream_t cuda_stream_create(void) {
    cudaStream_t s;
    CHECK_CUDA(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
    return s;
}
extern "C" void cuda_stream_destroy(cudaStream_t s) {
    if (!s) return;
    CHECK_CUDA(cudaStreamSynchronize(s));
    CHECK_CUDA(cudaStreamDestroy(s));
}
extern "C" void cuda_set_current_stream(cudaStream_t s) { current = s; }

// copies wait for what the stream has queued before them, and the host waits for the copy
// (the host buffer is pageable and may be reused at once)
extern "C" void cuda_upload(void *dst, const void *src, size_t bytes) {
    if (!bytes) return;
    CHECK_CUDA(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, current));
    CHECK_CUDA(cudaStreamSynchronize(current));
}
extern "C" void cuda_download(void *dst, const void *src, size_t bytes) {
    if (!bytes) return;
    CHECK_CUDA(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, current));
    CHECK_CUDA(cudaStreamSynchronize(current));
}
extern "C" void cuda_zero(void *p, size_t bytes) {
    if (bytes) CHECK_CUDA(cudaMemsetAsync(p, 0, bytes, current));
}

extern "C" void cuda_graph_begin(cudaStream_t s) {
    CHECK_CUDA(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal));
}
extern "C" void *cuda_graph_end(cudaStream_t s) {
    cudaGraph_t g;
    cudaGraphExec_t exec;
    CHECK_CUDA(cudaStreamEndCapture(s, &g));
    CHECK_CUDA(cudaGraphInstantiate(&exec, g, 0));
    CHECK_CUDA(cudaGraphDestroy(g));
    return (void *)exec;
}
extern "C" void cuda_graph_launch(void *graph, cudaStream_t s) { CHECK_CUDA(cudaGraphLaunch((cudaGraphExec_t)graph, s)); }
extern "C" void cuda_graph_free(void *graph) {
    if (graph) CHECK_CUDA(cudaGraphExecDestroy((cudaGraphExec_t)graph));
}
extern "C" void cuda_sync(void) { CHECK_CUDA(cudaDeviceSynchronize()); }

static void *arena_alloc_dev(size_t bytes) {
    void *p = NULL;
    if (cudaMalloc(&p, bytes) != cudaSuccess) {
        cudaGetLastError();
        return NULL;
    }
    return p;
}
static void arena_release_dev(void *p) { cuda_free(p); }
static void arena_zero_dev(void *p, size_t bytes) { cuda_zero(p, bytes); }
extern "C" const ArenaMemory cuda_arena_memory = {arena_alloc_dev, arena_release_dev, arena_zero_dev, "GPU memory"};

// ---- ParamSet mirrors ----
static float *mirror(const float *host, size_t n) {
    if (!host) return NULL;
    float *d = (float *)cuda_malloc(n * sizeof(float));
    cuda_upload(d, host, n * sizeof(float));
    return d;
}

extern "C" void cuda_params_mirror(ParamSet *dev, const ParamSet *ps) {
    CHECK(ps->data, "cuda_params_mirror before params_allocate");
    *dev = *ps;  // views, counts: the same info array
    dev->data = mirror(ps->data, ps->total);
    dev->grad = (float *)cuda_malloc(ps->total * sizeof(float));
    cuda_zero(dev->grad, ps->total * sizeof(float));
    dev->m = mirror(ps->m, ps->total);
    dev->v = mirror(ps->v, ps->total);
    dev->ema = mirror(ps->ema, ps->total);
}

extern "C" void cuda_params_to_host(ParamSet *ps, const ParamSet *dev) {
    size_t b = ps->total * sizeof(float);
    CHECK(ps->total == dev->total, "cuda_params_to_host: %zu floats on the host, %zu on the GPU", ps->total, dev->total);
    cuda_download(ps->data, dev->data, b);
    if (ps->grad) cuda_download(ps->grad, dev->grad, b);
    if (dev->m) {
        if (!ps->m) ps->m = (float *)xmalloc(b);
        cuda_download(ps->m, dev->m, b);
    }
    if (dev->v) {
        if (!ps->v) ps->v = (float *)xmalloc(b);
        cuda_download(ps->v, dev->v, b);
    }
    if (dev->ema) {
        if (!ps->ema) ps->ema = (float *)xmalloc(b);
        cuda_download(ps->ema, dev->ema, b);
    }
}

extern "C" void cuda_params_free(ParamSet *dev) {
    cuda_free(dev->data), cuda_free(dev->grad), cuda_free(dev->m), cuda_free(dev->v), cuda_free(dev->ema);
    dev->data = dev->grad = dev->m = dev->v = dev->ema = NULL;
}

// ---- shared small buffers: they grow in the first step, so later steps allocate nothing ----
// *buf holds at least `bytes` afterwards (`size` bytes when it has to grow; contents not kept);
// 1 when it grew
static int grow(void **buf, size_t *cap, size_t bytes, size_t size) {
    if (bytes <= *cap) return 0;
    cuda_sync();  // what is queued may still read the old buffer
    cuda_free(*buf);
    *cap = size;
    *buf = cuda_malloc(size);
    return 1;
}

double *cuda_reduce_buffer(size_t n) {
    static void *buf;
    static size_t cap;
    grow(&buf, &cap, n * sizeof(double), (n < 4096 ? 4096 : n) * sizeof(double));
    return (double *)buf;
}

// two growable scratch buffers for 16-bit copies of GEMM operands (bytes)
void *cuda_cast_buffer(int slot, size_t bytes) {
    static void *buf[2];
    static size_t cap[2];
    grow(&buf[slot], &cap[slot], bytes, bytes + bytes / 4);
    return buf[slot];
}

template <typename T>
__global__ void to_half_kernel(T *out, const float *in, size_t n) {
    GRID_STRIDE(i, n) put(&out[i], in[i]);
}

const void *cuda_to_half(int slot, const float *x, size_t n, cudaStream_t s) {
    void *b = cuda_cast_buffer(slot, n * 2);
    if (precision == PREC_FP16) to_half_kernel<<<grid_for(n), THREADS, 0, s>>>((__half *)b, x, n);
    else to_half_kernel<<<grid_for(n), THREADS, 0, s>>>((__nv_bfloat16 *)b, x, n);
    CHECK_LAUNCH();
    return b;
}

__global__ void fill_kernel(float *x, float v, size_t n) {
    GRID_STRIDE(i, n) x[i] = v;
}

const float *cuda_ones(size_t n) {
    static void *buf;
    static size_t cap;
    size_t m = n < 65536 ? 65536 : n;
    if (grow(&buf, &cap, n * sizeof(float), m * sizeof(float))) {
        fill_kernel<<<grid_for(m), THREADS>>>((float *)buf, 1.0f, m);
        CHECK_LAUNCH();
        cuda_sync();  // other streams read it next
    }
    return (const float *)buf;
}

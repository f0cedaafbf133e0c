// backend.c: which device a stage computes on. Built in every configuration; the CUDA side it
// asks (cuda_probe) exists only where nvcc was found (see cuda.h).
#include <stdio.h>
#include <string.h>

#include "cuda/cuda.h"

int cuda_available(void) {
#ifdef DOPPEL_CUDA
    static int probed = -1;
    if (probed < 0) probed = cuda_probe();
    return probed;
#else
    return 0;
#endif
}

int device_choose(const char *name, const char *who) {
    int want_gpu;
    if (!strcmp(name, "cpu")) return 0;
    else if (!strcmp(name, "cuda")) want_gpu = 1;
    else if (!strcmp(name, "auto")) want_gpu = 0;
    else return -1;
    if (cuda_available()) return 1;
#ifdef DOPPEL_CUDA
    fprintf(stderr, "%s: %sno CUDA GPU found: computing on the CPU\n", who, want_gpu ? "--device cuda, but " : "");
#else
    if (want_gpu) fprintf(stderr, "%s: --device cuda, but this build has no CUDA: computing on the CPU\n", who);
#endif
    return 0;
}

int precision_parse(const char *name, Precision *p) {
    static const char *names[] = {"fp32", "tf32", "bf16", "fp16"};
    for (int i = 0; i < 4; i++)
        if (!strcmp(name, names[i])) return *p = (Precision)i, 0;
    return -1;
}

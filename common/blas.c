#include "blas.h"

#include <stdlib.h>
#include <string.h>

// exported by DYNAMIC_ARCH builds of OpenBLAS
char *openblas_get_corename(void);
void gotoblas_dynamic_init(void);
void gotoblas_dynamic_quit(void);

static const char *best_core(void) {
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512bf16")) return "Cooperlake";
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl")) return "SkylakeX";
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return "Haswell";
    return NULL;
}

__attribute__((constructor)) void blas_init(void) {
    static int done;
    if (done) return;
    done = 1;
    if (getenv("OPENBLAS_CORETYPE")) return;
    const char *core = openblas_get_corename();
    const char *best = best_core();
    if (!best || !core || (strcasecmp(core, "Prescott") && strcasecmp(core, "Core2") && strcasecmp(core, "Nehalem")))
        return;  // detection worked, or nothing better to offer
    setenv("OPENBLAS_CORETYPE", best, 1);
    gotoblas_dynamic_quit();
    gotoblas_dynamic_init();
    unsetenv("OPENBLAS_CORETYPE");
}

const char *blas_core_name(void) { return openblas_get_corename(); }

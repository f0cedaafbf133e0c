// blas.h: OpenBLAS set-up. Debian's OpenBLAS 0.3.21 does not recognise recent Xeons and falls back
// to its generic "Prescott" SSE3 kernels, 2-3x slower than the AVX2/AVX-512 ones. At start-up
// doppel re-selects the kernel family from the CPU's features, unless the user set
// OPENBLAS_CORETYPE (which always wins).
#pragma once

void blas_init(void);              // idempotent; runs automatically before main()
const char *blas_core_name(void);  // e.g. "Cooperlake"

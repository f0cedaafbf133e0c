// rng.h: reproducible random numbers (xoshiro256** seeded by splitmix64, Box-Muller normals).
// The whole state is four words + a cached normal, so it can be saved in training_state.
#pragma once
#include <stdint.h>

typedef struct {
    uint64_t s[4];
    int has_spare;
    float spare;
} Rng;

void rng_seed(Rng *r, uint64_t seed);
uint64_t rng_u64(Rng *r);
float rng_uniform(Rng *r);                 // [0, 1)
float rng_normal(Rng *r);                  // N(0, 1)
uint32_t rng_below(Rng *r, uint32_t n);    // [0, n), unbiased
void rng_fill_normal(Rng *r, float *x, long n, float mean, float std);
void rng_fill_uniform(Rng *r, float *x, long n, float lo, float hi);

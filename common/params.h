// params.h: every parameter of a model in one allocation, with named views.
// A model declares its tensors (diffusers keys and shapes) while it is built, then
// params_allocate() makes one buffer each for parameters and gradients; AdamW moments and EMA
// weights are further buffers of the same `total` length, laid out identically, so zero-grad is
// one memset and an optimizer step is one loop.
#pragma once
#include <stddef.h>
#include <stdint.h>

#include "rng.h"

#define PARAM_NAME_MAX 128
#define PARAM_MAX_DIMS 4

typedef enum { INIT_ZEROS, INIT_ONES, INIT_UNIFORM, INIT_NORMAL } ParamInit;

typedef struct {
    char name[PARAM_NAME_MAX];  // diffusers key, e.g. "down_blocks.0.resnets.0.conv1.weight"
    int ndim;
    int64_t shape[PARAM_MAX_DIMS];
    size_t offset;              // in floats, into every buffer below
    size_t numel;
    ParamInit init;
    float init_scale;           // uniform bound or normal std
    int no_decay;               // excluded from AdamW weight decay (unused by default)
} ParamInfo;

typedef struct {
    ParamInfo *info;
    int count, cap;
    size_t total;  // floats in each buffer
    float *data;   // (total) parameters
    float *grad;   // (total) gradients; backward passes add into these
    float *m, *v;  // (total) AdamW moments, NULL until an optimizer needs them
    float *ema;    // (total) EMA weights, NULL unless EMA is on
} ParamSet;

// Declares a tensor; returns its id. The name is printf-formatted.
__attribute__((format(printf, 5, 6)))
int params_declare(ParamSet *ps, ParamInit init, float init_scale, const int64_t *shape_ndim_terminated,
                   const char *fmt, ...);
void params_allocate(ParamSet *ps);          // data + grad, zeroed
void params_init(ParamSet *ps, Rng *rng);    // PyTorch's default init distributions
void params_free(ParamSet *ps);
void params_zero_grad(ParamSet *ps);
int params_find(const ParamSet *ps, const char *name);  // -1 if absent
size_t params_count_floats(const ParamSet *ps);

static inline float *param_ptr(const ParamSet *ps, int id) { return ps->data + ps->info[id].offset; }
static inline float *grad_ptr(const ParamSet *ps, int id) { return ps->grad + ps->info[id].offset; }

// checkpoint.h: diffusers model folders and training state over a ParamSet.
//   DIR/config.json                          the model's config (diffusers keys + doppel's own)
//   DIR/diffusion_pytorch_model.safetensors  one F32 tensor per parameter, diffusers names/shapes
//   DIR/training_state.safetensors           "exp_avg.<key>" (AdamW m), "exp_avg_sq.<key>" (v),
//                                            "ema.<key>", "step" I64 (1), "rng" I64 (4): the
//                                            xoshiro words as raw bits, "rng_spare" F32 (2):
//                                            [has_spare, spare]
// Every file is written atomically (see io/fileio.h), so an interrupted save keeps the last one.
// Loading checks the exact key set and every shape before touching the destination; a failed
// load may still leave the destination partly overwritten if the file fails mid-read.
#pragma once
#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "params.h"
#include "rng.h"

#define CKPT_CONFIG "config.json"
#define CKPT_WEIGHTS "diffusion_pytorch_model.safetensors"
#define CKPT_STATE "training_state.safetensors"

typedef struct {
    int64_t step;
    Rng rng;
} TrainMeta;

// mkdir -p DIR; writes config.json (indent 2, sorted keys, as diffusers) and the weights taken
// from `weights` (ps->data or ps->ema), with metadata {"format": "pt"}.
int checkpoint_save_model(const char *dir, const ParamSet *ps, const float *weights, const json_t *config,
                          char *err, size_t errlen);
// Loads a safetensors file into `weights` (a buffer laid out like ps->data). The file must hold
// exactly ps's keys with ps's shapes; F32, F16 and BF16 are accepted (converted to float).
int checkpoint_load_weights(const char *path, const ParamSet *ps, float *weights, char *err, size_t errlen);
json_t *checkpoint_load_config(const char *dir, char *err, size_t errlen);  // NULL + err on failure
int checkpoint_load_model(const char *dir, ParamSet *ps, char *err, size_t errlen);  // into ps->data

// Saves ps->m, ps->v, ps->ema (those that are allocated), step and RNG state.
int checkpoint_save_state(const char *dir, const ParamSet *ps, const TrainMeta *meta, char *err, size_t errlen);
// Restores, bit for bit, into whichever of ps->m/v/ema are allocated (an error if the file lacks
// one of them; buffers the file has but ps lacks are ignored), and meta.
int checkpoint_load_state(const char *dir, ParamSet *ps, TrainMeta *meta, char *err, size_t errlen);

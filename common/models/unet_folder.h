// unet_folder.h: a user-conditioned UNet as a diffusers folder plus what sampling needs to know.
//   DIR/config.json                          UNet2DModel's config + "doppel": {
//        "users": ["ID_1", ...], "preset": "small", "step": 2000,
//        "prediction_type": "epsilon", "beta_schedule": "linear", "num_train_timesteps": 1000,
//        "beta_start": 0.0001, "beta_end": 0.02,
//        "vae": {"path": "runs/vae", "latent_channels": 4, "scaling_factor": 1.108, "sample_size": 64}}
//   DIR/diffusion_pytorch_model.safetensors  the raw weights (what --resume continues from)
//   DIR/scheduler_config.json                the same noise schedule as diffusers' DDPMScheduler config
//   DIR/ema/                                 the EMA weights as a folder of their own (sampling default)
//   DIR/training_state.safetensors           AdamW moments, EMA, step, RNG (io/checkpoint.h)
// class_embedding has len(users) + 1 rows; the last is the learned "no user" class.
#pragma once
#include <jansson.h>

#include "../sched/scheduler.h"
#include "models.h"

typedef struct {
    UNet2DModel model;
    json_t *config;         // the whole config.json (owned)
    json_t *users;          // doppel.users (borrowed) or NULL
    NoiseSchedule sched;    // from doppel's keys (diffusers' DDPMScheduler defaults when absent)
} UNetFolder;

// Loads DIR (weights from DIR/ema when use_ema and it exists; *used_ema says which). A folder
// written by diffusers (no "doppel" key) loads with the default schedule and no user names.
int unet_folder_load(UNetFolder *u, const char *dir, int use_ema, int *used_ema, char *err, size_t errlen);
// Writes config.json + weights (ps->data, or ps->ema with use_ema) + scheduler_config.json.
int unet_folder_save(const UNetFolder *u, const char *dir, int use_ema, char *err, size_t errlen);
void unet_folder_free(UNetFolder *u);
json_t *unet_folder_doppel(const UNetFolder *u);  // the "doppel" object, created if absent
// doppel.<schedule keys> <- s (prediction_type and schedule_to_json's keys)
void unet_folder_set_schedule(UNetFolder *u, const NoiseSchedule *s);
// The noise schedule keys of a config object (a UNet's "doppel", a latent classifier's top level):
// schedule_to_json writes beta_schedule, num_train_timesteps, beta_start, beta_end; schedule_from_json
// reads them and prediction_type, with diffusers' DDPMScheduler defaults for absent keys (o may be
// NULL): 0, or -1 + err naming the key.
void schedule_to_json(json_t *o, const NoiseSchedule *s);
int schedule_from_json(NoiseSchedule *s, const json_t *o, char *err, size_t errlen);

// A VAE/UNet pair fits when the UNet's in_channels == the VAE's latent_channels, the UNet's
// sample_size == the VAE's sample_size / downscale, and the user tables agree (same count; the
// same names where both have them). 0, or -1 + err naming both values.
int unet_vae_compatible(const UNetConfig *uc, const json_t *unet_users, const VaeConfig *vc, const json_t *vae_users,
                        char *err, size_t errlen);

// vae_folder.h: a VAE as a diffusers folder (config.json + diffusion_pytorch_model.safetensors)
// plus doppel's own settings under config.json's "doppel" key, which diffusers ignores:
//   {"channels": 1, "colormap": "jet", "resolution": 64, "users": ["ID_1", ...], "preset": "small",
//    "step": 1200, "source": "../shared/data/gait10"}
// The measured latent scaling factor is AutoencoderKL's own "scaling_factor".
#pragma once
#include <jansson.h>

#include "../image/image.h"
#include "models.h"

typedef struct {
    AutoencoderKL model;
    json_t *config;    // the whole config.json (owned)
    Colormap cmap;     // how 1-channel images are shown (doppel.colormap, default jet)
    json_t *users;     // doppel.users or NULL (borrowed from config)
} VaeFolder;

// Builds the model from DIR/config.json and loads its weights. A folder written by diffusers
// (no "doppel" key) loads too. Errors name the folder and the problem (missing file, wrong class,
// unsupported config, missing/unexpected tensors, shape mismatches).
int vae_folder_load(VaeFolder *v, const char *dir, char *err, size_t errlen);
// Writes config.json (diffusers keys from the model + "doppel": extra) and the weights (ps->data,
// or ps->ema when use_ema and EMA is on); atomic per file.
int vae_folder_save(const VaeFolder *v, const char *dir, int use_ema, char *err, size_t errlen);
void vae_folder_free(VaeFolder *v);
// doppel.<key> accessors (NULL / default when absent)
json_t *vae_folder_doppel(const VaeFolder *v);

// latent_classifier.h: a time-conditioned user classifier on noisy latents, for classifier guidance
// (Dhariwal & Nichol 2021, "Diffusion Models Beat GANs on Image Synthesis", section 4). It is the
// encoder half of UNet2DModel (same time embedding, conv_in, DownBlock2D blocks) with a head:
//   time_embedding  sinusoidal(t, C0) -> TimestepEmbedding C0 -> 4 C0           [N, 4 C0]
//   conv_in         3x3 conv in -> C0                                           [N, C0, h, w]
//   down_blocks.i   DownBlock2D (resnets with the time embedding), Downsample2D
//                   on every block but the last                                 [N, Ci, h/2^i, w/2^i]
//   conv_norm_out   GroupNorm, then SiLU                                        [N, F, h', w']
//   global average pool                                                         [N, F]
//   classifier      Linear F -> K users (no "no user" class)                    [N, K] logits
// Presets: "small" block_out_channels (64, 128, 256), 2 layers, 32 groups; "tiny" (32, 64), 1 layer,
// 8 groups (the UNet presets' encoders, without attention, and average pooling instead of
// Dhariwal & Nichol's attention pooling). GroupNorm eps 1e-5, flip_sin_to_cos, freq_shift 0, as
// the UNet. Backward adds into the parameter gradients and returns the input gradient, which
// guidance needs (timesteps take no gradient).
//
// A classifier folder (io/checkpoint.h): config.json + diffusion_pytorch_model.safetensors.
//   {"_class_name": "DoppelLatentClassifier", "in_channels": 4, "sample_size": 16,
//    "block_out_channels": [64, 128, 256], "layers_per_block": 2, "norm_num_groups": 32,
//    "norm_eps": 1e-05, "flip_sin_to_cos": true, "freq_shift": 0, "num_users": 3,
//    "users": ["ID_1", ...] (when the latents named them),
//    "beta_schedule": "linear", "num_train_timesteps": 1000, "beta_start": 0.0001, "beta_end": 0.02,
//    ... other keys (preset, step, cache, train_accuracy) kept through load and save}
// The schedule keys are the UNet folder's doppel.* keys (models/unet_folder.h): guidance refuses a
// classifier trained under another noise schedule than the UNet's.
#pragma once
#include <jansson.h>

#include "../nn/nn.h"
#include "../sched/scheduler.h"
#include "models.h"

#define LATENT_CLASSIFIER_CLASS_NAME "DoppelLatentClassifier"
#define LATENT_CLASSIFIER_MAX_USERS 100000

typedef struct {
    int in_channels, sample_size;  // the latents it classifies: (in_channels, sample_size, sample_size)
    int n_blocks, block_out_channels[MAX_BLOCKS];
    int layers_per_block, norm_num_groups;
    float norm_eps, freq_shift;
    int flip_sin_to_cos;
    int n_users;                   // K: logits per sample
} LatentClassifierConfig;

// The encoder of preset_unet(name) ("tiny", "small"; "seed" too) for latents (in_channels,
// sample_size^2) and n_users: 0, or -1 for an unknown name
int latent_classifier_preset(const char *name, int in_channels, int sample_size, int n_users, LatentClassifierConfig *c);
// 0, or -1 with err naming the key that makes the configuration unusable
int latent_classifier_config_check(const LatentClassifierConfig *c, char *err, size_t errlen);

typedef struct LatentClassifier {
    LatentClassifierConfig cfg;
    ParamSet ps;
    int time_embed_dim;          // 4 C0
    TimestepEmbedding time_embedding;
    Conv2d conv_in;
    DownBlock down[MAX_BLOCKS];
    GroupNorm conv_norm_out;
    Linear classifier;
    NoiseSchedule sched;         // the schedule its noisy latents came from
    json_t *users;               // user names (a JSON array, owned) or NULL
    json_t *extra;               // config.json keys beyond the above (owned) or NULL
    // saved by the forward for the backward
    float *emb;                  // (N, 4 C0)
    Tensor n_out, act;           // conv_norm_out output, SiLU output: [N, F, h', w']
    float *pooled;               // (N, F)
    int N;
} LatentClassifier;

// Declares and allocates the parameters (zeros; params_init draws PyTorch's init); sched and
// users are the caller's to set (users: a reference is taken). The config must pass the check.
void latent_classifier_build(LatentClassifier *m, const LatentClassifierConfig *cfg, const NoiseSchedule *sched,
                             json_t *users);
void latent_classifier_free(LatentClassifier *m);

// x (N, C, h, w) at timesteps (N) -> logits (N, K), arena memory
float *latent_classifier_forward(Ctx *ctx, LatentClassifier *m, Tensor x, const float *timesteps);
// dlogits (N, K) -> dx (N, C, h, w) (fresh arena memory); adds into m->ps's gradients
Tensor latent_classifier_backward(Ctx *ctx, LatentClassifier *m, const float *dlogits);

// grad (N, C, h, w) = d/dx log softmax(f(x, t))[y] per sample, through one forward + backward
// (the guidance term); p_y (N, optional) gets softmax(f(x, t))[y]. Samples whose y is outside
// 0..K-1 (the UNet's "no user" class) get a zero gradient and p_y 0. Adds into m->ps's gradients.
void latent_classifier_log_prob_grad(Ctx *ctx, LatentClassifier *m, Tensor x, const float *timesteps, const int32_t *y,
                                     float *grad, float *p_y);

// One training micro-step on clean latents x0 (N, C, h, w) with labels (N): t ~ U{0..T-1} and
// noise from ctx->rng, x_t = add_noise(x0, noise, t), cross-entropy of f(x_t, t); backpropagates
// loss * scale into m->ps's gradients. Returns the loss; *correct gets the top-1 hits.
float latent_classifier_train_step(Ctx *ctx, LatentClassifier *m, Tensor x0, const int32_t *labels, float scale,
                                   int *correct);
// Top-1 accuracy on n latents x0 (n, C, h, w) noised to timestep t, in batches of B, with noise
// drawn from rng_seed(seed) (the same draws for every t). Uses ctx->arena (resets it).
double latent_classifier_accuracy(Ctx *ctx, LatentClassifier *m, const float *x0, const int32_t *labels, int64_t n, int t,
                                  int B, uint64_t seed);

// Builds from DIR/config.json and loads DIR/diffusion_pytorch_model.safetensors; errors name the
// folder and the problem (another model class, a bad key, tensors that do not fit).
int latent_classifier_load(LatentClassifier *m, const char *dir, char *err, size_t errlen);
// Writes config.json (the architecture, users, schedule + m->extra) and the weights; atomic per file.
int latent_classifier_save(const LatentClassifier *m, const char *dir, char *err, size_t errlen);

// Whether the classifier can guide this UNet: the same latent channels and size, users (count,
// and names where both have them) and noise schedule (T and alphas_cumprod). 0, or -1 + err
// naming both values.
int latent_classifier_fits_unet(const LatentClassifier *m, const UNetConfig *uc, const json_t *unet_users,
                                const NoiseSchedule *unet_sched, char *err, size_t errlen);

// judge.h: doppel-validator's user classifier ("judge"): a small CNN over one ParamSet that tells
// which person a spectrogram belongs to, with a second head that embeds spectrograms for
// verification. Its pooled features are the space the validator's FID/KID are measured in.
//
// Two trunks (config "block_type"):
// "conv_bn" (the default since BatchNorm's arrival; on gait10's later windows it generalises far
// better than the group-normed ResNet: 95.8% against 85.3% in a PyTorch comparison of the two),
// shapes for (N, 1, 64, 64) inputs, default block_out_channels (32, 64, 128, 128):
//   blocks.i       3x3 conv (padding 1) -> BatchNorm2d -> ReLU -> 2x2 average pool
//                  [N, 32, 32, 32] [N, 64, 16, 16] [N, 128, 8, 8] [N, 128, 4, 4]
//   global average pool -> features                                        [N, 128]
// "resnet" (judges written before; config without "block_type"):
//   conv_in        3x3 conv C -> 32, padding 1                             [N, 32, 64, 64]
//   down_blocks.0  ResnetBlock2D 32 -> 32, Downsample2D (3x3, stride 2)     [N, 32, 32, 32]
//   down_blocks.1  ResnetBlock2D 32 -> 64, Downsample2D                     [N, 64, 16, 16]
//   down_blocks.2  ResnetBlock2D 64 -> 128, Downsample2D                    [N, 128, 8, 8]
//   down_blocks.3  ResnetBlock2D 128 -> 128 (no downsample: the last block) [N, 128, 8, 8]
//   conv_norm_out  GroupNorm, then SiLU (the resnets are pre-activation)    [N, 128, 8, 8]
//   global average pool -> features                                        [N, 128]
// Both heads, on the features:
//   dropout p (training only), classifier: Linear 128 -> K                  [N, K] logits
//   embedding: Linear 128 -> D on the features (before dropout)             [N, D]
// The embedding head is the metric-learning half of the judge: trained with a batch-hard triplet
// loss on cosine distances (ops/triplet.h) next to the classifier's cross-entropy, compared after
// L2 normalisation (genuine/impostor verification, diversity). embedding_dim 0 (judges written
// before the head existed) has no such head.
// "resnet": down blocks are diffusers' DownEncoderBlock2D (resnets without a time embedding, dropout 0 inside).
// Every GroupNorm has norm_num_groups groups, by default min(32, smallest channel count / 4)
// (8 for the default channels: 4 to 16 channels per group), and eps norm_eps (1e-6, as the VAE
// encoder's blocks). Parameter names follow diffusers: "down_blocks.1.resnets.0.conv1.weight",
// "conv_norm_out.weight"; "conv_bn": torch.nn.Conv2d / BatchNorm2d names "blocks.1.conv.weight",
// "blocks.1.norm.running_var" (the running stats are buffers: saved, never optimised); both:
// "classifier.weight" (K, 128), "embedding.weight" (D, 128).
//
// A judge folder is like a diffusers model folder (io/checkpoint.h): config.json +
// diffusion_pytorch_model.safetensors. config.json:
//   {"_class_name": "DoppelJudge", "block_type": "conv_bn", "channels": 1, "resolution": 64,
//    "block_out_channels": [32, 64, 128, 128],
//    "layers_per_block": 1, "norm_num_groups": 8, "norm_eps": 1e-06, "dropout": 0.1,
//    "embedding_dim": 64, "users": ["ID_1", ...], ...}
// plus any other keys (colormap, source, step), which are kept through load and save.
#pragma once
#include <jansson.h>

#include "../nn/nn.h"

#define JUDGE_CLASS_NAME "DoppelJudge"
#define JUDGE_DOWNSAMPLE_PADDING 1  // Downsample2D's conv: 3x3, stride 2, padding 1 (H -> ceil(H/2))
#define JUDGE_MAX_USERS 100000
#define JUDGE_USER_NAME_MAX 256
#define JUDGE_EMBEDDING_DIM 64   // the default embedding size
#define JUDGE_EMBEDDING_MAX 4096

typedef enum { JUDGE_RESNET, JUDGE_CONV_BN } JudgeBlockType;

typedef struct {
    JudgeBlockType block_type;
    int channels, resolution;  // the images it was trained on: (channels, resolution, resolution)
    int n_blocks, block_out_channels[MAX_BLOCKS];
    int layers_per_block, norm_num_groups;
    float norm_eps, dropout;
    int embedding_dim;         // D of the embedding head; 0: none
    int n_users;
    char **users;              // (n_users) names, in label order
} JudgeConfig;

// "conv_bn" / "resnet" (config.json's block_type, --block-type): 0, or -1 for another word
int judge_block_type_parse(const char *name, JudgeBlockType *out);
const char *judge_block_type_name(JudgeBlockType t);
// The default architecture above for these images and users (users are borrowed, not copied).
void judge_config_default(JudgeConfig *c, int channels, int resolution, int n_users, char **users);
// min(32, smallest channel / 4), lowered until it divides every channel count (at least 1)
int judge_default_groups(const int *block_out_channels, int n_blocks);
// 0, or -1 with err naming the key that makes the configuration unusable
int judge_config_check(const JudgeConfig *c, char *err, size_t errlen);
json_t *judge_config_to_json(const JudgeConfig *c);
// reads and checks a config.json object; c->users is allocated (judge_config_free)
int judge_config_from_json(JudgeConfig *c, const json_t *j, char *err, size_t errlen);
void judge_config_free(JudgeConfig *c);

typedef struct {  // "conv_bn": conv -> BatchNorm -> ReLU -> 2x2 average pool
    Conv2d conv;
    BatchNorm norm;
    Tensor n_out, act;  // saved: the norm's output (ReLU input), the ReLU output (pool input)
} ConvBnBlock;

typedef struct {
    JudgeConfig cfg;  // owns its users
    ParamSet ps;
    Conv2d conv_in;             // "resnet"
    DownBlock down[MAX_BLOCKS];
    GroupNorm conv_norm_out;
    ConvBnBlock blocks[MAX_BLOCKS];  // "conv_bn"
    Linear classifier;
    Linear embedding;  // when cfg.embedding_dim > 0
    json_t *extra;    // config.json keys beyond the architecture (colormap, source, step); owned, may be NULL
    // saved by the forward for the backward
    Tensor n_out, pooled_in;  // "resnet": conv_norm_out output, SiLU output; "conv_bn": the last block's output [N, F, h, w]
    float *features;          // (N, F) pooled features, before dropout
    float *dropped;           // (N, F) after dropout (the classifier's input)
    float *drop_mask;         // (N, F)
    float *emb;               // (N, D) raw embeddings (not normalised); NULL without the head
    int N;
} JudgeNet;

// Copies cfg (users included), declares and allocates the parameters (zeros); the config must pass
// judge_config_check. judge_init then draws PyTorch's default init.
void judge_build(JudgeNet *net, const JudgeConfig *cfg);
void judge_init(JudgeNet *net, Rng *rng);
void judge_free(JudgeNet *net);
static inline int judge_feature_dim(const JudgeNet *net) { return net->cfg.block_out_channels[net->cfg.n_blocks - 1]; }
int judge_user_index(const JudgeNet *net, const char *name);  // -1 if the judge does not know the user

// x (N, C, H, W) -> logits (N, K), arena memory; net->features holds the (N, F) features and
// net->emb the (N, D) embeddings until the next forward. Dropout acts when ctx->train (its mask
// drawn from ctx->rng).
float *judge_forward(Ctx *ctx, JudgeNet *net, Tensor x);
// dlogits (N, K) and demb (N, D) (NULL: no loss on the embeddings) -> dx (N, C, H, W) (fresh arena
// memory); adds into net->ps.grad
Tensor judge_backward(Ctx *ctx, JudgeNet *net, const float *dlogits, const float *demb);

// The trunk's block outputs as a perceptual feature space ("conv_bn" judges only): outs[i] (arena
// memory) is block i's output [N, C_i, H/2^(i+1), W/2^(i+1)]; returns the number of blocks. The
// backward takes a gradient for every output (douts[i].d NULL: none) and returns dx [N, C, H, W];
// it adds into net->ps.grad like judge_backward (callers that only want dx discard those).
int judge_block_outputs(Ctx *ctx, JudgeNet *net, Tensor x, Tensor *outs);
Tensor judge_block_outputs_backward(Ctx *ctx, JudgeNet *net, const Tensor *douts);

// Builds the judge from DIR/config.json and loads DIR/diffusion_pytorch_model.safetensors. Errors
// name the folder and the problem: a missing file, another model class, an unusable config,
// tensors that do not match the config (missing, unexpected, wrong shape).
int judge_folder_load(JudgeNet *net, const char *dir, char *err, size_t errlen);
// Writes config.json (the architecture + net->extra) and the weights (ps->data); atomic per file.
int judge_folder_save(const JudgeNet *net, const char *dir, char *err, size_t errlen);

// patch_disc.h: the patch discriminator of Stable Diffusion's autoencoder training: taming-
// transformers' NLayerDiscriminator (a pix2pix PatchGAN), trained with the hinge loss
// (activations.h) as in LPIPSWithDiscriminator.
//
// Architecture (input_nc = C, ndf, n_layers; every conv 4x4 with padding 1):
//   main.0   conv C -> ndf, stride 2, bias             main.1 LeakyReLU(0.2)
//   for i = 1 .. n_layers-1, ch_i = ndf * min(2^i, 8):
//   main.3i-1 conv ch_{i-1} -> ch_i, stride 2, no bias   main.3i norm   main.3i+1 LeakyReLU(0.2)
//   i = n_layers: the same with stride 1
//   main.3n+2 conv ch_n -> 1, stride 1, bias: the logits map
// e.g. C=1, ndf=32, n_layers=3 on 32x32: [N,32,16,16] [N,64,8,8] [N,128,4,4] [N,256,3,3] -> [N,1,2,2];
// on 64x64 the logits are [N,1,6,6], on 256x256 [N,1,30,30] (each logit sees a 70x70 patch).
// Parameter names are taming's state_dict keys ("main.0.weight", "main.3.weight", ...).
//
// Differences from taming, on purpose:
// - GroupNorm (groups: the largest divisor of the channels up to 32, eps 1e-5) instead of
//   BatchNorm2d: batch statistics (and running averages) are a nuisance in a C trainer with
//   gradient accumulation, and with a per-sample norm D(real) and D(fake) can share one batch.
//   taming uses BatchNorm2d (or ActNorm); a taming checkpoint's norm layers do not load here.
// Init as taming's weights_init: conv weights N(0, 0.02), norm weights N(1, 0.02), norm biases 0;
// conv biases keep PyTorch's default U(+-1/sqrt(fan_in)) (weights_init leaves them alone).
//
// Forward saves its activations in the struct (and the conv/norm layers' inputs), so run each
// forward's backward before the next forward. The calls use d->ps whatever ctx->ps is: they
// point ctx->ps at d->ps for the call and restore the caller's ParamSet before returning, so a
// VAE's Ctx can be passed as is. Backward adds into d->ps.grad and returns dx.
#pragma once
#include "../nn/nn.h"
#include "../optim/adamw.h"

#define PATCH_DISC_MAX_LAYERS 6     // n_layers; the net has n_layers + 2 convs
#define PATCH_DISC_KERNEL 4
#define PATCH_DISC_SLOPE 0.2f       // LeakyReLU negative slope
#define PATCH_DISC_GROUPS_MAX 32
#define PATCH_DISC_EPS 1e-5f        // GroupNorm eps (PyTorch's default, also BatchNorm2d's)
#define PATCH_DISC_INIT_STD 0.02f

typedef struct {
    int C, ndf, n_layers;
    ParamSet ps;                                // D's own parameters, gradients, AdamW moments
    ParamSet *active;                           // what the calls compute with: &ps (NULL means that),
                                                // or a device mirror of it on the GPU (patch_disc_to_gpu)
    Conv2d conv[PATCH_DISC_MAX_LAYERS + 2];     // conv[0..n_layers]: feature convs; conv[n_layers+1]: logits
    GroupNorm norm[PATCH_DISC_MAX_LAYERS + 1];  // norm[i] follows conv[i], 1 <= i <= n_layers
    Tensor pre[PATCH_DISC_MAX_LAYERS + 1];      // saved LeakyReLU inputs, [N, ch_i, h_i, w_i]
} PatchDiscriminator;

// Declares and allocates the parameters (zeros); n_layers in 1..PATCH_DISC_MAX_LAYERS, ndf >= 1.
void patch_disc_build(PatchDiscriminator *d, int C, int ndf, int n_layers);
// taming's init (see above): params_init, then norm weights 1 + N(0, 0.02).
void patch_disc_init(PatchDiscriminator *d, Rng *rng);
void patch_disc_free(PatchDiscriminator *d);
// x (N, C, H, W) -> logits (N, 1, h, w), arena memory
Tensor patch_disc_forward(Ctx *ctx, PatchDiscriminator *d, Tensor x);
// dlogits (N, 1, h, w) -> dx (N, C, H, W) (fresh arena memory); adds into d->ps.grad
Tensor patch_disc_backward(Ctx *ctx, PatchDiscriminator *d, Tensor dlogits);

// One discriminator update (LPIPSWithDiscriminator's optimizer_idx 1, disc_factor 1): zeroes D's
// gradients, runs real and fake (both (N, C, H, W), constants) through D as one batch of 2N
// (equal to two separate passes, the norm being per sample), d = hinge_d(D(real), D(fake)),
// backpropagates d, clips D's gradient norm to max_norm (torch clip_grad_norm_; <= 0: no
// clipping) and takes one AdamW step at lr; when a gradient is not finite it takes no step.
// Returns d as computed before the step.
float patch_disc_train_step(Ctx *ctx, PatchDiscriminator *d, AdamW *opt, float lr, float max_norm, Tensor real,
                            Tensor fake);
// On the GPU: mirrors D's parameters (and AdamW moments) to the device and computes with the
// mirror from then on; patch_disc_to_host copies them back (checkpoints), patch_disc_free frees it.
void patch_disc_to_gpu(PatchDiscriminator *d);
void patch_disc_zero_grad(Ctx *ctx, PatchDiscriminator *d);  // on whichever device ctx computes
void patch_disc_to_host(PatchDiscriminator *d);

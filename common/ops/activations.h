// activations.h: LeakyReLU and the hinge GAN losses of taming-transformers' patch discriminator
// (LPIPSWithDiscriminator with disc_loss="hinge"). Conventions as ops.h: outputs first; a backward
// adds (+=) into every gradient it writes and skips a NULL one; a loss forward returns the loss
// and its backward adds dloss * d(loss)/d(input).
#pragma once
#include <stddef.h>

// ---- LeakyReLU: out = x > 0 ? x : slope * x  (torch.nn.LeakyReLU(negative_slope)) ----
void leaky_relu_forward(float *out, const float *inp, size_t n, float slope);
void leaky_relu_backward(float *dinp, const float *dout, const float *inp, size_t n, float slope);

// ---- hinge loss of the discriminator ----
// d = 0.5 * (mean(relu(1 - logits_real)) + mean(relu(1 + logits_fake))), both (n) logits
// (taming's hinge_d_loss). Either gradient may be NULL.
float hinge_d_forward(const float *logits_real, const float *logits_fake, size_t n);
void hinge_d_backward(float *dreal, float *dfake, const float *logits_real, const float *logits_fake, size_t n,
                      float dloss);

// ---- generator side: g = -mean(logits_fake) (taming's g_loss with the hinge discriminator) ----
float hinge_g_forward(const float *logits_fake, size_t n);
void hinge_g_backward(float *dfake, size_t n, float dloss);

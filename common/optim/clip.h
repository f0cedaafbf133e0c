// clip.h: whole-model gradient norm, torch.nn.utils.clip_grad_norm_, and the NaN/Inf guard.
// All act on ps->grad over ps->total floats (padding is zero and adds nothing).
// A training step: grads_finite() (skip the step if not), clip_grad_norm(), adamw_step().
#pragma once
#include "params.h"

// L2 norm of all gradients as one vector, accumulated in double.
float grad_global_norm(const ParamSet *ps);
// torch.nn.utils.clip_grad_norm_(params, max_norm) (norm_type 2): clip_coef = max_norm /
// (total + 1e-6), grads *= clip_coef when it is below 1. Returns the norm before clipping
// (NaN/Inf when a gradient is; then grads are left as they are: check grads_finite first).
float clip_grad_norm(ParamSet *ps, float max_norm);
// 1 when every gradient is finite, 0 on any NaN or Inf.
int grads_finite(const ParamSet *ps);
// grads *= s
void grads_scale(ParamSet *ps, float s);

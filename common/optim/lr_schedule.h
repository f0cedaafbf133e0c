// lr_schedule.h: diffusers.optimization's schedules, as LambdaLR evaluates them.
// `step` counts optimizer steps taken so far (the scheduler is stepped after each optimizer step),
// so the first step uses lr_at(s, base, 0, ...). warmup and total are in optimizer steps.
#pragma once
#include <stdint.h>

typedef enum {
    LR_CONSTANT,         // get_constant_schedule
    LR_CONSTANT_WARMUP,  // get_constant_schedule_with_warmup: step/warmup, then 1
    LR_COSINE_WARMUP,    // get_cosine_schedule_with_warmup, num_cycles 0.5
    LR_LINEAR_WARMUP,    // get_linear_schedule_with_warmup: down to 0 at total, then 0
} LrSchedule;

float lr_at(LrSchedule s, float base_lr, int64_t step, int64_t warmup, int64_t total);
// "constant", "constant_with_warmup", "cosine", "linear" (diffusers' names); -1 if unknown
int lr_schedule_parse(const char *name, LrSchedule *out);
const char *lr_schedule_name(LrSchedule s);

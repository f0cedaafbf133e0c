#include "optim/lr_schedule.h"

#include <math.h>
#include <string.h>

static const char *const names[] = {
    [LR_CONSTANT] = "constant",
    [LR_CONSTANT_WARMUP] = "constant_with_warmup",
    [LR_COSINE_WARMUP] = "cosine",
    [LR_LINEAR_WARMUP] = "linear",
};

// the lr_lambda of each diffusers schedule, in its float arithmetic (Python floats are doubles)
static double lr_lambda(LrSchedule s, int64_t step, int64_t warmup, int64_t total) {
    double warm_div = (double)(warmup > 1 ? warmup : 1);
    double rest_div = (double)(total - warmup > 1 ? total - warmup : 1);
    if (s == LR_CONSTANT) return 1.0;
    if (step < warmup) return (double)step / warm_div;
    switch (s) {
    case LR_CONSTANT_WARMUP: return 1.0;
    case LR_COSINE_WARMUP: {
        // past `total` the half cosine climbs back up, as it does in diffusers
        double progress = (double)(step - warmup) / rest_div;
        return fmax(0.0, 0.5 * (1.0 + cos(M_PI * 0.5 * 2.0 * progress)));
    }
    case LR_LINEAR_WARMUP: return fmax(0.0, (double)(total - step) / rest_div);
    default: return 1.0;
    }
}

float lr_at(LrSchedule s, float base_lr, int64_t step, int64_t warmup, int64_t total) {
    return (float)((double)base_lr * lr_lambda(s, step, warmup, total));
}

int lr_schedule_parse(const char *name, LrSchedule *out) {
    for (int i = 0; i < (int)(sizeof(names) / sizeof(names[0])); i++)
        if (strcmp(name, names[i]) == 0) {
            *out = (LrSchedule)i;
            return 0;
        }
    return -1;
}

const char *lr_schedule_name(LrSchedule s) {
    return (unsigned)s < sizeof(names) / sizeof(names[0]) ? names[s] : "unknown";
}

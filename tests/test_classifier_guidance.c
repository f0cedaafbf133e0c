// test_classifier_guidance.c: the latent classifier (models/latent_classifier.h) and classifier
// guidance (diffusion_sample with SampleConfig.classifier): input and parameter gradients, and the
// guidance gradient of log p(y | x), by finite differences; training on a synthetic 3-user latent
// set reaches high accuracy at low noise; a folder round-trips bit for bit; a classifier that does
// not fit a UNet (users, latent size, schedule) is refused naming both values; guidance at scale 0
// equals sampling without a classifier bit for bit; a positive scale raises the classifier's
// P(target user) of the final samples (epsilon and v-prediction); `doppel-diffuser
// train-classifier` and `sample --classifier` end to end; bad arguments.
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "check.h"
#include "io/checkpoint.h"
#include "io/safetensors.h"
#include "models/diffusion.h"
#include "models/latent_classifier.h"
#include "models/unet_folder.h"
#include "optim/adamw.h"
#include "optim/clip.h"
#include "optim/lr_schedule.h"
#include "proc.h"
#include "testlib.h"

#define FD_EPS 1e-3f
#define FD_TOL 1e-2
#define N_USERS 3
#define PER_USER 16
#define N_LAT (N_USERS * PER_USER)
#define LAT_C 4
#define LAT_S 16
#define PER ((size_t)LAT_C * LAT_S * LAT_S)
#define TRAIN_STEPS 150
#define MIN_ACC_LOW_NOISE 0.9   // accuracy at t = 0 after TRAIN_STEPS (measured: see the printed values)
#define GUIDE_SCALE 10.0f       // classifier scale of the guidance test
#define MIN_P_GAIN 0.2          // mean P(target user) must rise by this much over scale 0; measured with
                                // TRAIN_STEPS 150 at scales 2, 8, 10, 16: epsilon +0.08, +0.29, +0.33, +0.43;
                                // v +0.48, +0.68, +0.70, +0.72 (with 100 steps: +0.23 eps at 10, too close)

static const char *USERS_JSON = "[\"ID_1\",\"ID_2\",\"ID_3\"]";

// ---- synthetic latents: user u has channel u raised and a stripe pattern of its own frequency ----
static void synth_latents(float *x, int32_t *lab, int n, uint64_t seed) {
    Rng r;
    rng_seed(&r, seed);
    for (int i = 0; i < n; i++) {
        int u = i % N_USERS;
        lab[i] = u;
        for (size_t j = 0; j < PER; j++) {
            int c = (int)(j / (LAT_S * LAT_S)), w = (int)(j % LAT_S);
            float pattern = (c == u ? 0.8f : 0.0f) + 0.5f * sinf(0.7f * (float)(u + 1) * (float)w + (float)c);
            x[(size_t)i * PER + j] = pattern + 0.6f * rng_normal(&r);
        }
    }
}

static void linear_schedule(NoiseSchedule *s, int T, PredictionType p) {
    char err[256];
    CHECK(noise_schedule_init(s, T, BETA_LINEAR, 0.0001f, 0.02f, p, err, sizeof(err)) == 0, "%s", err);
}

// ---- gradients ----
typedef struct {
    LatentClassifier *m;
    Ctx *ctx;
    Tensor x;
    const float *t, *dout;
    const int32_t *y;  // set: the loss is sum_n log p(y_n | x_n) instead of sum(logits * dout)
} FdCase;

static double logits_loss(void *p) {
    FdCase *c = p;
    arena_reset(c->ctx->arena);
    Tensor x = ctx_tensor(c->ctx, c->x.N, c->x.C, c->x.H, c->x.W);
    memcpy(x.d, c->x.d, tensor_numel(x) * sizeof(float));
    float *logits = latent_classifier_forward(c->ctx, c->m, x, c->t);
    int K = c->m->cfg.n_users;
    if (!c->y) return dot_f64(logits, c->dout, (size_t)x.N * K);
    double s = 0;
    for (int n = 0; n < x.N; n++) {
        const float *z = logits + (size_t)n * K;
        double mx = z[0], sum = 0;
        for (int k = 1; k < K; k++) mx = fmax(mx, z[k]);
        for (int k = 0; k < K; k++) sum += exp(z[k] - mx);
        s += z[c->y[n]] - mx - log(sum);
    }
    return s;
}

static void test_gradients(void) {
    LatentClassifierConfig cfg = {.in_channels = LAT_C, .sample_size = 8, .n_blocks = 2, .block_out_channels = {8, 16},
                                  .layers_per_block = 2, .norm_num_groups = 4, .norm_eps = 1e-5f, .flip_sin_to_cos = 1,
                                  .n_users = N_USERS};
    NoiseSchedule *s = xmalloc(sizeof(NoiseSchedule));
    linear_schedule(s, 1000, PRED_EPSILON);
    LatentClassifier m;
    latent_classifier_build(&m, &cfg, s, NULL);
    Rng rng;
    rng_seed(&rng, 21);
    params_init(&m.ps, &rng);
    for (size_t i = 0; i < m.ps.total; i++) m.ps.data[i] += 0.05f * rng_normal(&rng);  // norms away from 1/0
    Arena arena;
    arena_init(&arena, 0);
    Ctx ctx;
    ctx_init(&ctx, &m.ps, &arena, &rng);
    int N = 2, K = N_USERS;
    size_t nx = (size_t)N * LAT_C * 8 * 8;
    float *x = xmalloc(nx * sizeof(float)), *dout = xmalloc((size_t)N * K * sizeof(float)), *dx = xmalloc(nx * sizeof(float));
    float t[2] = {17, 640};
    int32_t y[2] = {2, 0};
    fill_randn(x, nx, 3, 1.0f);
    fill_randn(dout, (size_t)N * K, 4, 1.0f);
    FdCase c = {&m, &ctx, {x, N, LAT_C, 8, 8}, t, dout, NULL};
    params_zero_grad(&m.ps);
    logits_loss(&c);
    Tensor g = latent_classifier_backward(&ctx, &m, dout);
    EXPECT(g.N == N && g.C == LAT_C && g.H == 8 && g.W == 8, "dx shape [%d, %d, %d, %d]", g.N, g.C, g.H, g.W);
    memcpy(dx, g.d, nx * sizeof(float));
    fd_check("classifier dx", x, dx, nx, logits_loss, &c, 40, FD_EPS, FD_TOL);
    const char *names[] = {"time_embedding.linear_1.weight", "time_embedding.linear_2.bias", "conv_in.weight",
                           "down_blocks.0.resnets.1.time_emb_proj.weight", "down_blocks.0.downsamplers.0.conv.weight",
                           "down_blocks.1.resnets.0.conv_shortcut.weight", "down_blocks.1.resnets.1.norm1.bias",
                           "conv_norm_out.weight", "classifier.weight", "classifier.bias"};
    float *an = xmalloc(m.ps.total * sizeof(float));
    memcpy(an, m.ps.grad, m.ps.total * sizeof(float));
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        int id = params_find(&m.ps, names[i]);
        EXPECT(id >= 0, "no parameter %s", names[i]);
        if (id >= 0)
            fd_check(names[i], param_ptr(&m.ps, id), an + m.ps.info[id].offset, m.ps.info[id].numel, logits_loss, &c, 12,
                     FD_EPS, FD_TOL);
    }
    // the guidance term: grad_x log p(y | x, t), and p_y
    float p_y[2];
    arena_reset(&arena);
    Tensor xa = ctx_tensor(&ctx, N, LAT_C, 8, 8);
    memcpy(xa.d, x, nx * sizeof(float));
    latent_classifier_log_prob_grad(&ctx, &m, xa, t, y, dx, p_y);
    c.y = y;
    fd_check("grad log p(y | x)", x, dx, nx, logits_loss, &c, 40, FD_EPS, FD_TOL);
    double lp = logits_loss(&c), want = 0;
    for (int n = 0; n < N; n++) want += log(p_y[n]);
    EXPECT(fabs(lp - want) < 1e-4, "p_y: sum log p_y %.6f, log-softmax %.6f", want, lp);
    // the "no user" label (K) gets no gradient
    int32_t none[2] = {K, 1};
    arena_reset(&arena);
    xa = ctx_tensor(&ctx, N, LAT_C, 8, 8);
    memcpy(xa.d, x, nx * sizeof(float));
    latent_classifier_log_prob_grad(&ctx, &m, xa, t, none, dx, p_y);
    int zero = p_y[0] == 0.0f;
    for (size_t i = 0; i < nx / 2; i++) zero &= dx[i] == 0.0f;
    EXPECT(zero, "a sample of the 'no user' class got a classifier gradient");
    free(an), free(x), free(dout), free(dx), free(s);
    ctx_free(&ctx);
    arena_free(&arena);
    latent_classifier_free(&m);
}

// ---- training, shared by the tests after it ----
static LatentClassifier trained;  // tiny, on synth_latents, under the linear schedule, T = 1000
static int have_trained;

static void test_learns_synthetic(void) {
    float *x0 = xmalloc(N_LAT * PER * sizeof(float));
    int32_t lab[N_LAT];
    synth_latents(x0, lab, N_LAT, 1);
    LatentClassifierConfig cfg;
    EXPECT(latent_classifier_preset("tiny", LAT_C, LAT_S, N_USERS, &cfg) == 0 && cfg.n_blocks == 2 &&
               cfg.block_out_channels[0] == 32 && cfg.block_out_channels[1] == 64 && cfg.layers_per_block == 1,
           "tiny preset: block_out_channels (32, 64), 1 layer");
    EXPECT(latent_classifier_preset("huge", LAT_C, LAT_S, N_USERS, &cfg) == -1, "an unknown preset is refused");
    latent_classifier_preset("tiny", LAT_C, LAT_S, N_USERS, &cfg);
    NoiseSchedule *s = xmalloc(sizeof(NoiseSchedule));
    linear_schedule(s, 1000, PRED_EPSILON);
    json_t *users = json_loads(USERS_JSON, 0, NULL);
    latent_classifier_build(&trained, &cfg, s, users);
    json_decref(users);
    Rng rng;
    rng_seed(&rng, 5);
    params_init(&trained.ps, &rng);
    AdamW opt;
    adamw_init(&opt, &trained.ps, 2e-3f, 0.9f, 0.999f, 1e-8f, 0.01f);
    Arena arena;
    arena_init(&arena, 0);
    Ctx ctx;
    ctx_init(&ctx, &trained.ps, &arena, &rng);
    ctx.train = 1;
    const int B = 16;
    double first = 0, last = 0;
    for (int step = 0; step < TRAIN_STEPS; step++) {
        arena_reset(&arena);
        params_zero_grad(&trained.ps);
        Tensor x = ctx_tensor(&ctx, B, LAT_C, LAT_S, LAT_S);
        int32_t y[16];
        for (int i = 0; i < B; i++) {
            int k = (int)rng_below(&rng, N_LAT);
            memcpy(x.d + i * PER, x0 + k * PER, PER * sizeof(float));
            y[i] = lab[k];
        }
        int correct;
        float loss = latent_classifier_train_step(&ctx, &trained, x, y, 1.0f, &correct);
        if (step < 10) first += loss / 10;
        if (step >= TRAIN_STEPS - 10) last += loss / 10;
        clip_grad_norm(&trained.ps, 1.0f);
        adamw_step(&opt, &trained.ps, lr_at(LR_COSINE_WARMUP, 2e-3f, step, 10, TRAIN_STEPS));
    }
    double acc[4];
    for (int k = 0; k < 4; k++) acc[k] = latent_classifier_accuracy(&ctx, &trained, x0, lab, N_LAT, 250 * k, 16, 99);
    printf("  loss %.3f -> %.3f; accuracy at t = 0, 250, 500, 750: %.2f %.2f %.2f %.2f\n", first, last, acc[0], acc[1],
           acc[2], acc[3]);
    EXPECT(acc[0] >= MIN_ACC_LOW_NOISE, "accuracy %.2f at t = 0, want >= %.2f", acc[0], MIN_ACC_LOW_NOISE);
    EXPECT(last < first, "the loss did not fall: %.3f -> %.3f", first, last);
    // held out: other draws of the same users' latents
    synth_latents(x0, lab, N_LAT, 2);
    double held = latent_classifier_accuracy(&ctx, &trained, x0, lab, N_LAT, 0, 16, 7);
    printf("  held-out latents at t = 0: %.2f\n", held);
    EXPECT(held >= MIN_ACC_LOW_NOISE, "held-out accuracy %.2f at t = 0", held);
    have_trained = !tl_current_failed();
    free(x0), free(s);
    ctx_free(&ctx);
    arena_free(&arena);
}

// ---- folders and fit ----
static void test_folder_and_fit(void) {
    if (!have_trained) return tl_fail(__FILE__, __LINE__, "needs test_learns_synthetic's classifier");
    char dir[512], err[512];
    snprintf(dir, sizeof(dir), "%s", tl_scratch_path("cls_roundtrip"));
    trained.extra = json_pack("{s:s, s:i}", "preset", "tiny", "step", TRAIN_STEPS);
    EXPECT(latent_classifier_save(&trained, dir, err, sizeof(err)) == 0, "%s", err);
    LatentClassifier *b = xcalloc(1, sizeof(LatentClassifier));
    EXPECT(latent_classifier_load(b, dir, err, sizeof(err)) == 0, "%s", err);
    if (tl_current_failed()) return free(b);
    EXPECT(b->ps.total == trained.ps.total && !memcmp(b->ps.data, trained.ps.data, trained.ps.total * sizeof(float)),
           "weights differ after a save and load");
    EXPECT(!memcmp(&b->cfg, &trained.cfg, sizeof(b->cfg)), "config differs after a save and load");
    EXPECT(b->sched.T == 1000 && b->sched.beta_schedule == BETA_LINEAR &&
               !memcmp(b->sched.alphas_cumprod, trained.sched.alphas_cumprod, 1000 * sizeof(float)),
           "schedule differs after a save and load");
    EXPECT(json_equal(b->users, trained.users), "users differ after a save and load");
    json_t *step = json_object_get(b->extra, "step");
    EXPECT(json_integer_value(step) == TRAIN_STEPS && json_object_get(b->extra, "preset"), "extra keys are kept");
    // fit against UNets
    UNetConfig uc;
    preset_unet("tiny", N_USERS, &uc);
    json_t *names = json_loads(USERS_JSON, 0, NULL), *other = json_loads("[\"ID_1\",\"ID_7\",\"ID_3\"]", 0, NULL);
    NoiseSchedule *s = xmalloc(sizeof(NoiseSchedule));
    linear_schedule(s, 1000, PRED_V);  // the prediction type does not matter to the classifier
    EXPECT(latent_classifier_fits_unet(b, &uc, names, s, err, sizeof(err)) == 0, "a fitting UNet refused: %s", err);
    EXPECT(latent_classifier_fits_unet(b, &uc, other, s, err, sizeof(err)) && strstr(err, "ID_2") && strstr(err, "ID_7"),
           "other user names: %s", err);
    uc.num_class_embeds = 5;
    EXPECT(latent_classifier_fits_unet(b, &uc, NULL, s, err, sizeof(err)) && strstr(err, "3 users") && strstr(err, "has 4"),
           "4 users: %s", err);
    uc.num_class_embeds = 4, uc.sample_size = 8;
    EXPECT(latent_classifier_fits_unet(b, &uc, names, s, err, sizeof(err)) && strstr(err, "16x16") && strstr(err, "8x8"),
           "8x8 latents: %s", err);
    uc.sample_size = 16;
    linear_schedule(s, 500, PRED_EPSILON);
    EXPECT(latent_classifier_fits_unet(b, &uc, names, s, err, sizeof(err)) && strstr(err, "T = 1000") && strstr(err, "T = 500"),
           "T = 500: %s", err);
    char e2[256];
    CHECK(noise_schedule_init(s, 1000, BETA_SQUAREDCOS_CAP_V2, 0.0001f, 0.02f, PRED_EPSILON, e2, sizeof(e2)) == 0, "%s", e2);
    EXPECT(latent_classifier_fits_unet(b, &uc, names, s, err, sizeof(err)) && strstr(err, "linear") &&
               strstr(err, "squaredcos_cap_v2"),
           "cosine schedule: %s", err);
    printf("  refused: %s\n", err);
    json_decref(names), json_decref(other), free(s);
    latent_classifier_free(b), free(b);
}

// ---- guidance ----
typedef struct {
    UNet2DModel m;
    NoiseSchedule s;
    Arena arena;
    Rng rng;
    Ctx ctx;
} UNetSetup;

// the tiny UNet, untrained (PyTorch's init): guidance must move its samples towards the user
static UNetSetup *unet_setup(PredictionType pred, uint64_t seed) {
    UNetSetup *e = xcalloc(1, sizeof(UNetSetup));
    UNetConfig c;
    CHECK(preset_unet("tiny", N_USERS, &c) == 0, "tiny preset");
    unet_build(&e->m, &c);
    rng_seed(&e->rng, seed);
    params_init(&e->m.ps, &e->rng);
    linear_schedule(&e->s, 1000, pred);
    arena_init(&e->arena, 0);
    ctx_init(&e->ctx, &e->m.ps, &e->arena, &e->rng);
    return e;
}

static void unet_teardown(UNetSetup *e) {
    ctx_free(&e->ctx);
    arena_free(&e->arena);
    unet_free(&e->m);
    free(e);
}

static void run_sample(UNetSetup *e, LatentClassifier *cls, float scale, SamplerKind k, int steps, float guidance,
                       const int32_t *lab, const int64_t *seeds, int N, float *out) {
    SampleConfig sc = {.guidance = guidance, .classifier = cls, .classifier_scale = scale};
    char err[256];
    CHECK(sampler_init(&sc.sampler, &e->s, k, steps, k == SAMPLER_DDIM ? 0.5f : 0.0f, 0, err, sizeof(err)) == 0, "%s", err);
    arena_reset(&e->arena);
    diffusion_sample(&e->ctx, &e->m, &e->s, &sc, lab, seeds, N, out, NULL, NULL);
}

// mean over samples of the classifier's P(y | x, t = 0)
static double mean_p_target(const float *x, const int32_t *lab, int N) {
    Arena arena;
    arena_init(&arena, 0);
    Rng rng;
    rng_seed(&rng, 0);
    Ctx ctx;
    ctx_init(&ctx, &trained.ps, &arena, &rng);
    Tensor xt = ctx_tensor(&ctx, N, LAT_C, LAT_S, LAT_S);
    memcpy(xt.d, x, (size_t)N * PER * sizeof(float));
    float *t = arena_floats(&arena, (size_t)N), *grad = arena_floats(&arena, (size_t)N * PER), p[16];
    for (int n = 0; n < N; n++) t[n] = 0;
    latent_classifier_log_prob_grad(&ctx, &trained, xt, t, lab, grad, p);
    double m = 0;
    for (int n = 0; n < N; n++) m += p[n] / N;
    ctx_free(&ctx);
    arena_free(&arena);
    return m;
}

static void test_scale_zero_is_bitwise_plain(void) {
    if (!have_trained) return tl_fail(__FILE__, __LINE__, "needs test_learns_synthetic's classifier");
    UNetSetup *e = unet_setup(PRED_EPSILON, 3);
    int32_t lab[4] = {0, 1, 2, N_USERS};  // the last: "no user"
    int64_t seeds[4] = {5, 6, 7, 8};
    float *plain = xmalloc(4 * PER * sizeof(float)), *zero = xmalloc(4 * PER * sizeof(float)),
          *guided = xmalloc(4 * PER * sizeof(float));
    SamplerKind kinds[] = {SAMPLER_DDPM, SAMPLER_DDIM, SAMPLER_DPMPP_2M};
    for (int k = 0; k < 3; k++) {
        float g = k == 1 ? 2.0f : 1.0f;  // DDIM with classifier-free guidance as well
        run_sample(e, NULL, 0.0f, kinds[k], 5, g, lab, seeds, 4, plain);
        run_sample(e, &trained, 0.0f, kinds[k], 5, g, lab, seeds, 4, zero);
        EXPECT(!memcmp(plain, zero, 4 * PER * sizeof(float)), "%s: classifier scale 0 differs from no classifier",
               sampler_kind_name(kinds[k]));
        run_sample(e, &trained, GUIDE_SCALE, kinds[k], 5, g, lab, seeds, 4, guided);
        EXPECT(memcmp(plain, guided, 3 * PER * sizeof(float)) != 0, "%s: classifier scale %g changed nothing",
               sampler_kind_name(kinds[k]), (double)GUIDE_SCALE);
        EXPECT(!memcmp(plain + 3 * PER, guided + 3 * PER, PER * sizeof(float)),
               "%s: the 'no user' sample was guided by the classifier", sampler_kind_name(kinds[k]));
    }
    free(plain), free(zero), free(guided);
    unet_teardown(e);
}

static void guidance_gain(PredictionType pred) {
    UNetSetup *e = unet_setup(pred, 4);
    enum { N = 9 };
    int32_t lab[N];
    int64_t seeds[N];
    for (int n = 0; n < N; n++) lab[n] = n % N_USERS, seeds[n] = 100 + n;
    float *x0 = xmalloc(N * PER * sizeof(float)), *xg = xmalloc(N * PER * sizeof(float));
    run_sample(e, &trained, 0.0f, SAMPLER_DDIM, 10, 1.0f, lab, seeds, N, x0);
    run_sample(e, &trained, GUIDE_SCALE, SAMPLER_DDIM, 10, 1.0f, lab, seeds, N, xg);
    double p0 = mean_p_target(x0, lab, N), pg = mean_p_target(xg, lab, N);
    printf("  %s: mean P(target user) of the final samples %.3f at scale 0, %.3f at scale %g\n", prediction_type_name(pred),
           p0, pg, (double)GUIDE_SCALE);
    EXPECT(pg >= p0 + MIN_P_GAIN, "%s: P(target) %.3f -> %.3f, want a rise of at least %.2f", prediction_type_name(pred), p0,
           pg, MIN_P_GAIN);
    free(x0), free(xg);
    unet_teardown(e);
}

static void test_guidance_raises_p_target(void) {
    if (!have_trained) return tl_fail(__FILE__, __LINE__, "needs test_learns_synthetic's classifier");
    guidance_gain(PRED_EPSILON);
    guidance_gain(PRED_V);
}

// ---- the commands ----
static char cache_path[512], cls_dir[512], unet_dir[512], unet4_dir[512];

static int file_exists(const char *p) {
    struct stat st;
    return stat(p, &st) == 0 && st.st_size > 0;
}

static int files_equal(const char *a, const char *b) {
    size_t na, nb;
    unsigned char *x = tl_read_file(a, &na), *y = tl_read_file(b, &nb);
    int eq = x && y && na == nb && !memcmp(x, y, na);
    free(x), free(y);
    return eq;
}

// a latent cache as doppel-encoder encode --cache writes it
static void write_cache(const char *path, int n, int users) {
    float *x = xmalloc((size_t)n * PER * sizeof(float));
    int32_t *lab = xmalloc((size_t)n * sizeof(int32_t));
    int64_t *seed = xmalloc((size_t)n * sizeof(int64_t));
    synth_latents(x, lab, n, 1);
    for (int i = 0; i < n; i++) lab[i] %= users, seed[i] = i;
    StEntry e[3] = {{"latent", ST_F32, 4, {n, LAT_C, LAT_S, LAT_S}, x}, {"label", ST_I32, 1, {n}, lab},
                    {"seed", ST_I64, 1, {n}, seed}};
    const char *kv[] = {"users", users == N_USERS ? USERS_JSON : "[\"ID_1\"]", "format", "doppel-latent-cache"};
    char err[256];
    EXPECT(st_save(path, e, 3, kv, 2, err, sizeof(err)) == 0, "%s", err);
    free(x), free(lab), free(seed);
}

// an untrained tiny UNet folder for `users` users under the linear schedule
static void write_unet(const char *dir, int users) {
    UNetFolder *u = xcalloc(1, sizeof(UNetFolder));
    UNetConfig c;
    preset_unet("tiny", users, &c);
    unet_build(&u->model, &c);
    Rng rng;
    rng_seed(&rng, 8);
    params_init(&u->model.ps, &rng);
    linear_schedule(&u->sched, 1000, PRED_EPSILON);
    u->config = json_object();
    unet_folder_set_schedule(u, &u->sched);
    json_t *names = json_array();
    for (int i = 0; i < users; i++) {
        char nm[16];
        snprintf(nm, sizeof(nm), "ID_%d", i + 1);
        json_array_append_new(names, json_string(nm));
    }
    json_object_set_new(unet_folder_doppel(u), "users", names);
    char err[512];
    EXPECT(unet_folder_save(u, dir, 0, err, sizeof(err)) == 0, "%s", err);
    unet_folder_free(u), free(u);
}

static int run(const char *const *argv, char **out, char **err) { return proc_run(argv, 120, out, err); }

static void test_cli_train_and_sample(void) {
    snprintf(cache_path, sizeof(cache_path), "%s", tl_scratch_path("latents.safetensors"));
    snprintf(cls_dir, sizeof(cls_dir), "%s", tl_scratch_path("classifier"));
    snprintf(unet_dir, sizeof(unet_dir), "%s", tl_scratch_path("unet"));
    snprintf(unet4_dir, sizeof(unet4_dir), "%s", tl_scratch_path("unet4"));
    write_cache(cache_path, N_LAT, N_USERS);
    write_unet(unet_dir, N_USERS);
    write_unet(unet4_dir, 4);
    if (tl_current_failed()) return;
    char *out, *err;
    int rc = run((const char *[]){"doppel-diffuser", "train-classifier", "--cache", cache_path, "--classifier", cls_dir,
                                  "--unet", unet_dir, "--preset", "tiny", "--steps", "80", "--batch", "16", "--lr", "2e-3",
                                  "--warmup", "10", "--seed", "1", "--threads", "1", NULL}, &out, &err);
    EXPECT(rc == 0, "train-classifier: rc %d\n%s", rc, err);
    printf("%s", out);
    EXPECT(strstr(out, "t =    0") && strstr(out, "t =  750"), "no accuracy per noise level on stdout:\n%s", out);
    free(out), free(err);
    char path[600];
    snprintf(path, sizeof(path), "%s/metrics.jsonl", cls_dir);
    EXPECT(file_exists(path), "no %s", path);
    LatentClassifier *m = xcalloc(1, sizeof(LatentClassifier));
    char e[512];
    EXPECT(latent_classifier_load(m, cls_dir, e, sizeof(e)) == 0, "%s", e);
    if (!tl_current_failed()) {
        json_t *acc = json_object_get(m->extra, "train_accuracy");
        double a0 = json_number_value(json_object_get(acc, "0"));
        EXPECT(a0 >= MIN_ACC_LOW_NOISE, "train-classifier: accuracy %.2f at t = 0, want >= %.2f", a0, MIN_ACC_LOW_NOISE);
        EXPECT(m->cfg.n_users == N_USERS && json_array_size(m->users) == N_USERS && m->sched.T == 1000 &&
                   json_integer_value(json_object_get(m->extra, "step")) == 80 &&
                   json_is_string(json_object_get(m->extra, "unet")),
               "config.json: users, schedule, step, unet");
    }
    latent_classifier_free(m), free(m);
    // sample: no classifier, classifier at scale 0 (the same file bit for bit), at scale 10
    char a[600], b[600], c[600];
    snprintf(a, sizeof(a), "%s", tl_scratch_path("plain.safetensors"));
    snprintf(b, sizeof(b), "%s", tl_scratch_path("scale0.safetensors"));
    snprintf(c, sizeof(c), "%s", tl_scratch_path("scale10.safetensors"));
    const char *base[] = {"doppel-diffuser", "sample", "--unet", unet_dir, "--per-user", "2", "--sampler", "ddim", "--steps",
                          "4", "--seed", "3", "--threads", "1"};
    const char *argv[24];
    int k = 0;
    for (; k < 14; k++) argv[k] = base[k];
    argv[k] = "--cache", argv[k + 1] = a, argv[k + 2] = NULL;
    rc = run(argv, &out, &err);
    EXPECT(rc == 0 && file_exists(a), "sample: rc %d\n%s", rc, err);
    free(out), free(err);
    argv[k + 1] = b, argv[k + 2] = "--classifier", argv[k + 3] = cls_dir, argv[k + 4] = "--classifier-scale", argv[k + 5] = "0";
    argv[k + 6] = NULL;
    rc = run(argv, &out, &err);
    EXPECT(rc == 0 && file_exists(b), "sample --classifier-scale 0: rc %d\n%s", rc, err);
    EXPECT(files_equal(a, b), "sample with --classifier-scale 0 differs from sample without a classifier");
    free(out), free(err);
    argv[k + 1] = c, argv[k + 5] = "10";
    rc = run(argv, &out, &err);
    EXPECT(rc == 0 && file_exists(c) && strstr(err, "classifier guidance 10"), "sample --classifier-scale 10: rc %d\n%s", rc,
           err);
    EXPECT(!files_equal(a, c), "--classifier-scale 10 changed nothing");
    free(out), free(err);
    // a classifier that does not fit: another UNet's users, another schedule, not a classifier
    argv[3] = unet4_dir, argv[k + 5] = "1";
    rc = run(argv, &out, &err);
    EXPECT(rc == 1 && strstr(err, "3 users") && strstr(err, "has 4") && strstr(err, unet4_dir) && strstr(err, cls_dir),
           "a 4-user UNet with a 3-user classifier: rc %d\n%s", rc, err);
    free(out), free(err);
    char t500[600];
    snprintf(t500, sizeof(t500), "%s", tl_scratch_path("classifier_t500"));
    rc = run((const char *[]){"doppel-diffuser", "train-classifier", "--cache", cache_path, "--classifier", t500, "--preset",
                              "tiny", "--steps", "2", "--timesteps", "500", "--threads", "1", NULL}, &out, &err);
    EXPECT(rc == 0, "train-classifier --timesteps 500: rc %d\n%s", rc, err);
    free(out), free(err);
    argv[3] = unet_dir, argv[k + 3] = t500;
    rc = run(argv, &out, &err);
    EXPECT(rc == 1 && strstr(err, "T = 500") && strstr(err, "T = 1000"), "a T = 500 classifier on a T = 1000 UNet: rc %d\n%s",
           rc, err);
    free(out), free(err);
    argv[k + 3] = unet_dir;
    rc = run(argv, &out, &err);
    EXPECT(rc == 1 && strstr(err, LATENT_CLASSIFIER_CLASS_NAME), "a UNet folder as --classifier: rc %d\n%s", rc, err);
    free(out), free(err);
    rc = run((const char *[]){"doppel-diffuser", "train-classifier", "--cache", cache_path, "--classifier", t500, "--unet",
                              unet4_dir, "--preset", "tiny", "--steps", "2", NULL}, &out, &err);
    EXPECT(rc == 1 && strstr(err, "3 users") && strstr(err, "has 4"), "train-classifier --unet with 4 users: rc %d\n%s", rc,
           err);
    free(out), free(err);
}

static void test_cli_bad_arguments(void) {
    struct {
        const char *argv[16];
        int rc;
        const char *says;
    } cases[] = {
        {{"doppel-diffuser", "train-classifier", "--classifier", "x", NULL}, 2, "--cache"},
        {{"doppel-diffuser", "train-classifier", "--cache", "x", NULL}, 2, "--classifier"},
        {{"doppel-diffuser", "train-classifier", "--cache", "x", "--classifier", "y", "--preset", "huge", NULL}, 2, "huge"},
        {{"doppel-diffuser", "train-classifier", "--cache", "x", "--classifier", "y", "--unet", "u", "--timesteps", "500", NULL},
         2, "--unet"},
        {{"doppel-diffuser", "train-classifier", "--cache", "x", "--classifier", "y", "--steps", "0", NULL}, 2, "--steps"},
        {{"doppel-diffuser", "train-classifier", "--cache", "tests/fixtures/op_avgpool.safetensors", "--classifier", "y", NULL},
         1, "latent"},
        {{"doppel-diffuser", "train-classifier", "--cache", "/nonexistent/latents.safetensors", "--classifier", "y", NULL}, 1,
         "/nonexistent/latents.safetensors"},
        {{"doppel-diffuser", "sample", "--unet", "u", "--classifier-scale", "2", NULL}, 2, "--classifier"},
        {{"doppel-diffuser", "sample", "--unet", "u", "--classifier", "c", "--classifier-scale", "-1", NULL}, 2,
         "--classifier-scale"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char *out, *err;
        int rc = run(cases[i].argv, &out, &err);
        EXPECT(rc == cases[i].rc && strstr(err, cases[i].says), "%s %s ...: rc %d (want %d), stderr lacks '%s':\n%s",
               cases[i].argv[1], cases[i].argv[2], rc, cases[i].rc, cases[i].says, err);
        free(out), free(err);
    }
    // a cache with one user
    char one[600], *out, *err;
    snprintf(one, sizeof(one), "%s", tl_scratch_path("one_user.safetensors"));
    write_cache(one, 8, 1);
    int rc = run((const char *[]){"doppel-diffuser", "train-classifier", "--cache", one, "--classifier",
                                  tl_scratch_path("cls_one"), NULL}, &out, &err);
    EXPECT(rc == 1 && strstr(err, "at least 2"), "a one-user cache: rc %d\n%s", rc, err);
    free(out), free(err);
    rc = run((const char *[]){"doppel-diffuser", "train-classifier", "--help", NULL}, &out, &err);
    EXPECT(rc == 0 && strstr(out, "--classifier DIR") && strstr(out, "examples"), "train-classifier --help: rc %d", rc);
    free(out), free(err);
    rc = run((const char *[]){"doppel-diffuser", "--help", NULL}, &out, &err);
    EXPECT(rc == 0 && strstr(out, "train-classifier"), "doppel-diffuser --help lacks train-classifier");
    free(out), free(err);
}

int main(void) {
    RUN(test_gradients);
    RUN(test_learns_synthetic);
    RUN(test_folder_and_fit);
    RUN(test_scale_zero_is_bitwise_plain);
    RUN(test_guidance_raises_p_target);
    RUN(test_cli_train_and_sample);
    RUN(test_cli_bad_arguments);
    latent_classifier_free(&trained);
    return tl_finish();
}

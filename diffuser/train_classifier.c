// train_classifier.c: doppel-diffuser train-classifier — the time-conditioned user classifier on
// noisy latents that classifier guidance differentiates (models/latent_classifier.h).
#include <getopt.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "cli/cli.h"
#include "io/checkpoint.h"
#include "io/fileio.h"
#include "models/latent_classifier.h"
#include "net/zsock.h"
#include "optim/adamw.h"
#include "optim/clip.h"
#include "optim/lr_schedule.h"
#include "diffuser.h"

#define MSG "doppel-diffuser: "
#define RUNNING_BETA 0.98  // running loss / accuracy on the progress line: an average over ~50 steps
#define EVAL_LEVELS 4      // final accuracy at t = 0, T/4, T/2, 3T/4 (0, 250, 500, 750 for T = 1000)

typedef struct {
    const char *cache, *dir, *preset, *unet, *metrics;
    int steps, batch, warmup, threads, T, augment, schedule_given;
    double lr, wd, clip, beta_start, beta_end;
    uint64_t seed;
    BetaSchedule beta;
} ClassifierOptions;

static const char *USAGE_TRAIN_CLASSIFIER =
    "usage: doppel-diffuser train-classifier --cache FILE --classifier DIR [options]\n"
    "\n"
    "examples:\n"
    "  doppel-diffuser train-classifier --cache runs/latents.safetensors --classifier runs/classifier --unet runs/unet\n"
    "  doppel-diffuser sample --unet runs/unet --classifier runs/classifier --classifier-scale 2 --users all --per-user 16 \\\n"
    "      --out @tcp://127.0.0.1:5556\n"
    "\n"
    "Trains a user classifier on noisy latents for classifier guidance: each sample gets t ~ U{0..T-1} and\n"
    "x_t = sqrt(ac[t]) x0 + sqrt(1 - ac[t]) eps; the loss is the cross-entropy of its user. The model is the\n"
    "UNet preset's encoder (time embedding, conv_in, DownBlock2D blocks) + GroupNorm, SiLU, average pool, Linear.\n"
    "\n"
    "data:      --cache FILE (doppel-encoder encode --cache)  --batch B (32)  --augment (random circular shift\n"
    "           of each latent along time)\n"
    "model:     --preset tiny|small (small: block_out_channels 64, 128, 256; tiny: 32, 64)\n"
    "noise:     --unet DIR: the UNet's schedule (guidance needs the same; also checks its users and latents fit)\n"
    "           or --beta-schedule linear|scaled_linear|squaredcos_cap_v2 (linear) --timesteps T (1000)\n"
    "           --beta-start 0.0001 --beta-end 0.02\n"
    "optimizer: --steps N (2000) --lr 3e-4 --warmup 100 (then cosine) --weight-decay 0.01 --clip 1.0\n"
    "output:    DIR/config.json + DIR/diffusion_pytorch_model.safetensors, --metrics FILE (DIR/metrics.jsonl);\n"
    "           at the end, the accuracy on the cache at t = 0, T/4, T/2, 3T/4 (stdout, config.json's train_accuracy)\n"
    "common:    --seed S (0) --threads N --help\n";

static ClassifierOptions parse_options(int argc, char **argv) {
    ClassifierOptions o = {.preset = "small", .steps = 2000, .batch = 32, .warmup = 100, .T = 1000, .lr = 3e-4, .wd = 0.01,
                           .clip = 1.0, .beta_start = 0.0001, .beta_end = 0.02, .beta = BETA_LINEAR};
    enum { O_CACHE = 256, O_DIR, O_PRESET, O_UNET, O_STEPS, O_BATCH, O_LR, O_WARMUP, O_WD, O_CLIP, O_BETA, O_T, O_BS, O_BE,
           O_AUG, O_METRICS, O_SEED, O_THREADS, O_HELP };
    static const struct option opts[] = {
        {"cache", 1, 0, O_CACHE}, {"classifier", 1, 0, O_DIR}, {"preset", 1, 0, O_PRESET}, {"unet", 1, 0, O_UNET},
        {"steps", 1, 0, O_STEPS}, {"batch", 1, 0, O_BATCH}, {"lr", 1, 0, O_LR}, {"warmup", 1, 0, O_WARMUP},
        {"weight-decay", 1, 0, O_WD}, {"clip", 1, 0, O_CLIP}, {"beta-schedule", 1, 0, O_BETA}, {"timesteps", 1, 0, O_T},
        {"beta-start", 1, 0, O_BS}, {"beta-end", 1, 0, O_BE}, {"augment", 0, 0, O_AUG}, {"metrics", 1, 0, O_METRICS},
        {"seed", 1, 0, O_SEED}, {"threads", 1, 0, O_THREADS}, {"help", 0, 0, O_HELP}, {0, 0, 0, 0}};
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case O_CACHE: o.cache = optarg; break;
        case O_DIR: o.dir = optarg; break;
        case O_PRESET: o.preset = optarg; break;
        case O_UNET: o.unet = optarg; break;
        case O_STEPS: o.steps = (int)cli_parse_long(TOOL, "--steps", optarg, 1, 100000000); break;
        case O_BATCH: o.batch = (int)cli_parse_long(TOOL, "--batch", optarg, 1, 65536); break;
        case O_LR: o.lr = cli_parse_double(TOOL, "--lr", optarg, 0, 10); break;
        case O_WARMUP: o.warmup = (int)cli_parse_long(TOOL, "--warmup", optarg, 0, 100000000); break;
        case O_WD: o.wd = cli_parse_double(TOOL, "--weight-decay", optarg, 0, 10); break;
        case O_CLIP: o.clip = cli_parse_double(TOOL, "--clip", optarg, 0, 1e9); break;
        case O_BETA:
            if (beta_schedule_parse(optarg, &o.beta))
                cli_usage_error(TOOL, "--beta-schedule must be linear, scaled_linear or squaredcos_cap_v2");
            o.schedule_given = 1;
            break;
        case O_T: o.T = (int)cli_parse_long(TOOL, "--timesteps", optarg, 2, SCHED_MAX_T), o.schedule_given = 1; break;
        case O_BS: o.beta_start = cli_parse_double(TOOL, "--beta-start", optarg, 0, 1), o.schedule_given = 1; break;
        case O_BE: o.beta_end = cli_parse_double(TOOL, "--beta-end", optarg, 0, 1), o.schedule_given = 1; break;
        case O_AUG: o.augment = 1; break;
        case O_METRICS: o.metrics = optarg; break;
        case O_SEED: o.seed = (uint64_t)cli_parse_long(TOOL, "--seed", optarg, 0, (long)(~0UL >> 1)); break;
        case O_THREADS: o.threads = (int)cli_parse_long(TOOL, "--threads", optarg, 1, 1024); break;
        case O_HELP: fputs(USAGE_TRAIN_CLASSIFIER, stdout); exit(EXIT_OK);
        default: cli_usage_error(TOOL, "unknown option for 'train-classifier'");
        }
    }
    if (optind < argc) cli_usage_error(TOOL, "unexpected argument '%s'", argv[optind]);
    if (!o.cache) cli_usage_error(TOOL, "--cache FILE is required (a latent cache from doppel-encoder encode --cache)");
    if (!o.dir) cli_usage_error(TOOL, "--classifier DIR is required (where the classifier is written)");
    if (o.unet && o.schedule_given)
        cli_usage_error(TOOL, "--unet takes the UNet's noise schedule: drop --beta-schedule/--timesteps/--beta-start/--beta-end");
    if (strcmp(o.preset, "tiny") && strcmp(o.preset, "small")) cli_usage_error(TOOL, "unknown --preset '%s' (tiny, small)", o.preset);
    if (o.threads) omp_set_num_threads(o.threads);
    return o;
}

// the noise schedule (--unet's or the options'), and with --unet the check that the cache fits it
static int make_classifier(LatentClassifier *m, const ClassifierOptions *o, const LatentSource *src, int n_users, Rng *rng,
                           char *err, size_t errlen) {
    NoiseSchedule *s = xmalloc(sizeof(NoiseSchedule));
    UNetFolder u;
    memset(&u, 0, sizeof(u));
    int rc = 0;
    if (o->unet) rc = unet_folder_load(&u, o->unet, 1, NULL, err, errlen);
    if (!rc && o->unet) *s = u.sched;
    if (!rc && !o->unet)
        rc = noise_schedule_init(s, o->T, o->beta, (float)o->beta_start, (float)o->beta_end, PRED_EPSILON, err, errlen);
    LatentClassifierConfig c;
    CHECK(latent_classifier_preset(o->preset, src->C, src->h, n_users, &c) == 0, "preset %s", o->preset);
    if (!rc && latent_classifier_config_check(&c, err, errlen)) rc = -1;
    if (!rc) {
        latent_classifier_build(m, &c, s, src->users);
        params_init(&m->ps, rng);
        m->extra = json_pack("{s:s, s:s}", "preset", o->preset, "cache", o->cache);
        if (o->unet) json_object_set_new(m->extra, "unet", json_string(o->unet));
        char e[512];
        if (o->unet && latent_classifier_fits_unet(m, &u.model.cfg, u.users, &u.sched, e, sizeof(e)))
            rc = errf(err, errlen, "the cache %s does not fit the UNet %s: %s", o->cache, o->unet, e);
    }
    if (o->unet && u.config) unet_folder_free(&u);
    free(s);
    return rc;
}

// the accuracy on the cache at EVAL_LEVELS noise levels: printed and kept in config.json
static void report_accuracy(Ctx *ctx, LatentClassifier *m, const LatentSource *src, const ClassifierOptions *o) {
    json_t *acc = json_object();
    printf("accuracy of %s on its training cache (%lld latents):\n", o->dir, (long long)src->n);
    for (int k = 0; k < EVAL_LEVELS; k++) {
        int t = k * m->sched.T / EVAL_LEVELS;
        double a = latent_classifier_accuracy(ctx, m, src->lat, src->lab, src->n, t, o->batch, o->seed + 0xe7a1);
        printf("  t = %4d (sqrt(alphas_cumprod) %.3f): %.1f%%\n", t, sqrt((double)m->sched.alphas_cumprod[t]), 100 * a);
        char key[16];
        snprintf(key, sizeof(key), "%d", t);
        json_object_set_new(acc, key, json_real(a));
    }
    fflush(stdout);
    json_object_set_new(m->extra, "train_accuracy", acc);
}

int diffuser_train_classifier_main(int argc, char **argv) {
    ClassifierOptions o = parse_options(argc, argv);
    char err[1024], path[4096];
    LatentSource src;
    if (latents_open(&src, o.cache, NULL, o.seed, o.augment, err, sizeof(err)))
        return fprintf(stderr, MSG "%s\n", err), EXIT_RUNTIME;
    if (src.h != src.w) return fprintf(stderr, MSG "latents are %dx%d: only square latents are supported\n", src.h, src.w), EXIT_RUNTIME;
    // users: the cache's table, else the largest label + 1
    int n_users = src.users ? (int)json_array_size(src.users) : 0;
    for (int64_t i = 0; !src.users && i < src.n; i++) n_users = src.lab[i] + 1 > n_users ? src.lab[i] + 1 : n_users;
    for (int64_t i = 0; i < src.n; i++)
        if (src.lab[i] >= n_users)
            return fprintf(stderr, MSG "latent %lld has label %d but the cache names %d users\n", (long long)i, src.lab[i],
                           n_users), latents_close(&src), EXIT_RUNTIME;
    if (n_users < 2) return fprintf(stderr, MSG "the cache has %d user(s): a classifier needs at least 2\n", n_users),
                            latents_close(&src), EXIT_RUNTIME;
    Rng rng;
    rng_seed(&rng, o.seed + 0xc1a5);
    LatentClassifier *m = xcalloc(1, sizeof(LatentClassifier));  // holds a 32 KB schedule
    if (make_classifier(m, &o, &src, n_users, &rng, err, sizeof(err))) {
        fprintf(stderr, MSG "%s\n", err);
        latent_classifier_free(m), free(m), latents_close(&src);
        return EXIT_RUNTIME;
    }
    if (mkdir_p(o.dir, err, sizeof(err))) return fprintf(stderr, MSG "%s\n", err), EXIT_RUNTIME;
    if (!o.metrics) snprintf(path, sizeof(path), "%s/metrics.jsonl", o.dir);
    MetricsLog *ml = metrics_open(o.metrics ? o.metrics : path, err, sizeof(err));
    if (!ml) fprintf(stderr, MSG "no metrics log: %s\n", err);
    AdamW opt;
    adamw_init(&opt, &m->ps, (float)o.lr, 0.9f, 0.999f, 1e-8f, (float)o.wd);
    Arena arena;
    arena_init(&arena, 0);
    Ctx ctx;
    ctx_init(&ctx, &m->ps, &arena, &rng);
    ctx.train = 1;
    fprintf(stderr, MSG "%s latent classifier (%zu parameters), %d users, latents %dx%dx%d, %s schedule T = %d%s%s, "
            "%d steps x batch %d\n", o.preset, params_count_floats(&m->ps), n_users, src.C, src.h, src.w,
            beta_schedule_name(m->sched.beta_schedule), m->sched.T, o.unet ? " from " : "", o.unet ? o.unet : "", o.steps,
            o.batch);
    Progress p;
    progress_start(&p, "train classifier", o.steps, "step");
    double run_loss = 0, run_acc = 0, run_w = 0;
    int fails = 0, rc = EXIT_OK;
    int64_t batch_no = 0;
    while (opt.step < o.steps && !zsock_interrupted()) {
        arena_reset(&arena);
        params_zero_grad(&m->ps);
        Tensor x;
        int32_t *y;
        latents_batch(&src, &ctx, batch_no++, o.batch, &x, &y);
        int correct;
        float loss = latent_classifier_train_step(&ctx, m, x, y, 1.0f, &correct);
        if (!isfinite(loss) || !grads_finite(&m->ps)) {
            fprintf(stderr, MSG "step %lld: loss or gradients are not finite; skipping the step\n", (long long)opt.step + 1);
            if (++fails >= 5) {
                fprintf(stderr, MSG "5 non-finite steps in a row: stopping (lower --lr?)\n");
                rc = EXIT_RUNTIME;
                break;
            }
            continue;
        }
        fails = 0;
        float norm = o.clip > 0 ? clip_grad_norm(&m->ps, (float)o.clip) : grad_global_norm(&m->ps);
        float lr = lr_at(LR_COSINE_WARMUP, (float)o.lr, opt.step, o.warmup, o.steps), acc = (float)correct / x.N;
        adamw_step(&opt, &m->ps, lr);
        run_loss = RUNNING_BETA * run_loss + (1 - RUNNING_BETA) * loss;
        run_acc = RUNNING_BETA * run_acc + (1 - RUNNING_BETA) * acc;
        run_w = RUNNING_BETA * run_w + (1 - RUNNING_BETA);
        if (ml) {
            char line[256];
            snprintf(line, sizeof(line), "{\"step\":%lld,\"loss\":%.6g,\"acc\":%.4g,\"lr\":%.6g,\"grad_norm\":%.6g}",
                     (long long)opt.step, loss, acc, lr, norm);
            metrics_write(ml, line);
        }
        char extra[96];
        snprintf(extra, sizeof(extra), "loss %.4f acc %.1f%%", run_loss / run_w, 100 * run_acc / run_w);
        progress_update(&p, opt.step, extra);
    }
    progress_finish(&p, NULL);
    if (opt.step > 0) {
        if (!zsock_interrupted()) report_accuracy(&ctx, m, &src, &o);
        json_object_set_new(m->extra, "step", json_integer(opt.step));
        if (latent_classifier_save(m, o.dir, err, sizeof(err))) fprintf(stderr, MSG "%s\n", err), rc = EXIT_RUNTIME;
        else fprintf(stderr, MSG "saved %s at step %lld%s\n", o.dir, (long long)opt.step, zsock_interrupted() ? " (interrupted)" : "");
    } else {
        fprintf(stderr, MSG "no training step was taken; nothing saved\n");
        rc = EXIT_RUNTIME;
    }
    metrics_close(&ml);
    ctx_free(&ctx);
    arena_free(&arena);
    latent_classifier_free(m);
    free(m);
    latents_close(&src);
    return rc;
}

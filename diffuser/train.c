// train.c: doppel-diffuser train — the user-conditioned UNet on latents (see diffusion.h).
#include <getopt.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "check.h"
#include "cli/cli.h"
#include "io/checkpoint.h"
#include "io/fileio.h"
#include "net/zsock.h"
#include "optim/adamw.h"
#include "optim/clip.h"
#include "optim/ema.h"
#include "optim/lr_schedule.h"
#include "plot/plot.h"
#include "diffuser.h"
#include "optim/loss_scale.h"

typedef struct {
    const char *in, *cache, *unet, *preset, *metrics, *vae, *device, *precision;
    int steps, batch, warmup, accum, save_every, resume, threads, stop_at, augment, T, sample_every, users;
    int grad_checkpoint;
    double lr, wd, clip, ema, dropout, snr_gamma, beta_start, beta_end;
    uint64_t seed;
    LrSchedule sched;
    BetaSchedule beta;
    PredictionType pred;
} TrainOptions;

static const char *USAGE_TRAIN =
    "usage: doppel-diffuser train (--cache FILE | --in EP) --unet DIR [options]\n"
    "\n"
    "examples:\n"
    "  doppel-diffuser train --cache runs/latents.safetensors --unet runs/unet --preset small --steps 3000 \\\n"
    "      --vae runs/vae --augment\n"
    "  doppel-diffuser train --in '>tcp://127.0.0.1:5556' --unet runs/unet --steps 3000   # from doppel-encoder encode\n"
    "  doppel-diffuser train --cache runs/latents.safetensors --unet runs/unet --steps 3000 --resume\n"
    "\n"
    "data:     --cache FILE (doppel-encoder encode --cache) | --in EP (a live 'latent' stream)\n"
    "          --batch B (32; a stream's batches are as they come)  --augment (random circular\n"
    "          shift of each latent along time)  --users N (user count when the data names none)\n"
    "model:    --preset tiny|small|seed (small)  --prediction epsilon|v_prediction (epsilon)\n"
    "          --beta-schedule linear|scaled_linear|squaredcos_cap_v2 (linear)  --timesteps T (1000)\n"
    "          --beta-start 0.0001 --beta-end 0.02\n"
    "          class_embedding has users + 1 rows; the last is the learned 'no user' class\n"
    "loss:     MSE on the prediction; --snr-gamma G (0: off; 5 is min-SNR-5)\n"
    "          --cond-dropout P (0.1): each sample trains as 'no user' with probability P (guidance)\n"
    "optimizer: --steps N (2000) --lr 1e-4 --warmup 100 --schedule cosine|constant|constant_with_warmup|linear\n"
    "          --accum A (1) --weight-decay 0.01 --clip 1.0 --ema DECAY (0.9999, with warm-up; 0: off)\n"
    "memory:   --grad-checkpoint recomputes each UNet block's activations in the backward: the same\n"
    "          gradients for about a third of the activation memory and ~1.3x the time per step\n"
    "output:   --save-every K (500) checkpoints (atomic; DIR/ema holds the EMA weights sampling uses)\n"
    "          --metrics FILE (DIR/metrics.jsonl), DIR/loss.png\n"
    "          --vae DIR: checks the VAE fits and writes DIR/samples/step_<k>.png (a row per user)\n"
    "          every --sample-every K steps (500; 0: only at the end)\n"
    "          --resume continues exactly (a stream skips the batches already used); --stop-at K\n"
    "          checkpoints and stops after step K keeping the schedule of --steps\n"
    "device:   --device cpu|cuda|auto (auto: the GPU when there is one; the same steps as the CPU\n"
    "          within float rounding)  --threads N (CPU)\n"
    "          --precision fp32|tf32|bf16|fp16: the GPU's GEMMs (fp32 master weights, AdamW and\n"
    "          sums either way: bf16 is torch.autocast(bfloat16)'s mixed precision; fp16 adds\n"
    "          dynamic loss scaling as torch's GradScaler, the scale in metrics.jsonl)\n"
    "common:   --seed S (0) --help\n";

static TrainOptions parse_train(int argc, char **argv) {
    TrainOptions o = {.device = "auto", .preset = "small", .steps = 2000, .batch = 32, .warmup = 100, .accum = 1, .save_every = 500,
                      .T = 1000, .sample_every = 500, .lr = 1e-4, .wd = 0.01, .clip = 1.0, .ema = 0.9999, .dropout = 0.1,
                      .beta_start = 0.0001, .beta_end = 0.02, .sched = LR_COSINE_WARMUP, .beta = BETA_LINEAR,
                      .pred = PRED_EPSILON};
    enum { O_IN = 256, O_CACHE, O_UNET, O_PRESET, O_STEPS, O_BATCH, O_LR, O_WARMUP, O_SCHED, O_ACCUM, O_WD, O_CLIP, O_EMA,
           O_SAVE, O_RESUME, O_METRICS, O_SEED, O_THREADS, O_STOP, O_AUG, O_PRED, O_BETA, O_T, O_BS, O_BE, O_SNR, O_DROP,
           O_VAE, O_SEVERY, O_USERS, O_CKPT, O_DEVICE, O_PREC, O_HELP };
    static const struct option opts[] = {
        {"in", 1, 0, O_IN}, {"cache", 1, 0, O_CACHE}, {"unet", 1, 0, O_UNET}, {"preset", 1, 0, O_PRESET},
        {"steps", 1, 0, O_STEPS}, {"batch", 1, 0, O_BATCH}, {"lr", 1, 0, O_LR}, {"warmup", 1, 0, O_WARMUP},
        {"schedule", 1, 0, O_SCHED}, {"accum", 1, 0, O_ACCUM}, {"weight-decay", 1, 0, O_WD}, {"clip", 1, 0, O_CLIP},
        {"ema", 1, 0, O_EMA}, {"save-every", 1, 0, O_SAVE}, {"resume", 0, 0, O_RESUME}, {"metrics", 1, 0, O_METRICS},
        {"seed", 1, 0, O_SEED}, {"threads", 1, 0, O_THREADS}, {"stop-at", 1, 0, O_STOP}, {"augment", 0, 0, O_AUG},
        {"prediction", 1, 0, O_PRED}, {"beta-schedule", 1, 0, O_BETA}, {"timesteps", 1, 0, O_T},
        {"beta-start", 1, 0, O_BS}, {"beta-end", 1, 0, O_BE}, {"snr-gamma", 1, 0, O_SNR}, {"cond-dropout", 1, 0, O_DROP},
        {"vae", 1, 0, O_VAE}, {"sample-every", 1, 0, O_SEVERY}, {"users", 1, 0, O_USERS}, {"grad-checkpoint", 0, 0, O_CKPT},
        {"device", 1, 0, O_DEVICE}, {"precision", 1, 0, O_PREC}, {"help", 0, 0, O_HELP},
        {0, 0, 0, 0}};
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case O_IN: o.in = optarg; break;
        case O_CACHE: o.cache = optarg; break;
        case O_UNET: o.unet = optarg; break;
        case O_PRESET: o.preset = optarg; break;
        case O_STEPS: o.steps = (int)cli_parse_long(TOOL, "--steps", optarg, 1, 100000000); break;
        case O_BATCH: o.batch = (int)cli_parse_long(TOOL, "--batch", optarg, 1, 65536); break;
        case O_LR: o.lr = cli_parse_double(TOOL, "--lr", optarg, 0, 10); break;
        case O_WARMUP: o.warmup = (int)cli_parse_long(TOOL, "--warmup", optarg, 0, 100000000); break;
        case O_SCHED: if (lr_schedule_parse(optarg, &o.sched)) cli_usage_error(TOOL, "unknown --schedule '%s'", optarg); break;
        case O_ACCUM: o.accum = (int)cli_parse_long(TOOL, "--accum", optarg, 1, 4096); break;
        case O_WD: o.wd = cli_parse_double(TOOL, "--weight-decay", optarg, 0, 10); break;
        case O_CLIP: o.clip = cli_parse_double(TOOL, "--clip", optarg, 0, 1e9); break;
        case O_EMA: o.ema = cli_parse_double(TOOL, "--ema", optarg, 0, 1); break;
        case O_SAVE: o.save_every = (int)cli_parse_long(TOOL, "--save-every", optarg, 1, 100000000); break;
        case O_RESUME: o.resume = 1; break;
        case O_DEVICE: o.device = cli_parse_device(TOOL, optarg); break;
        case O_PREC: o.precision = cli_parse_precision(TOOL, optarg); break;
        case O_METRICS: o.metrics = optarg; break;
        case O_SEED: o.seed = (uint64_t)cli_parse_long(TOOL, "--seed", optarg, 0, (long)(~0UL >> 1)); break;
        case O_THREADS: o.threads = (int)cli_parse_long(TOOL, "--threads", optarg, 1, 1024); break;
        case O_STOP: o.stop_at = (int)cli_parse_long(TOOL, "--stop-at", optarg, 1, 100000000); break;
        case O_AUG: o.augment = 1; break;
        case O_PRED: if (prediction_type_parse(optarg, &o.pred)) cli_usage_error(TOOL, "--prediction must be epsilon or v_prediction"); break;
        case O_BETA: if (beta_schedule_parse(optarg, &o.beta)) cli_usage_error(TOOL, "--beta-schedule must be linear, scaled_linear or squaredcos_cap_v2"); break;
        case O_T: o.T = (int)cli_parse_long(TOOL, "--timesteps", optarg, 2, SCHED_MAX_T); break;
        case O_BS: o.beta_start = cli_parse_double(TOOL, "--beta-start", optarg, 0, 1); break;
        case O_BE: o.beta_end = cli_parse_double(TOOL, "--beta-end", optarg, 0, 1); break;
        case O_SNR: o.snr_gamma = cli_parse_double(TOOL, "--snr-gamma", optarg, 0, 1e6); break;
        case O_DROP: o.dropout = cli_parse_double(TOOL, "--cond-dropout", optarg, 0, 1); break;
        case O_VAE: o.vae = optarg; break;
        case O_SEVERY: o.sample_every = (int)cli_parse_long(TOOL, "--sample-every", optarg, 0, 100000000); break;
        case O_USERS: o.users = (int)cli_parse_long(TOOL, "--users", optarg, 1, 1000000); break;
        case O_CKPT: o.grad_checkpoint = 1; break;
        case O_HELP: fputs(USAGE_TRAIN, stdout); exit(EXIT_OK);
        default: cli_usage_error(TOOL, "unknown option for 'train'");
        }
    }
    if (optind < argc) cli_usage_error(TOOL, "unexpected argument '%s'", argv[optind]);
    if (!o.unet) cli_usage_error(TOOL, "--unet DIR is required");
    if (!o.in == !o.cache) cli_usage_error(TOOL, "give one of --cache FILE or --in EP");
    if (o.threads) omp_set_num_threads(o.threads);
    return o;
}

// ---- loss history and curve ----
typedef struct {
    float *step, *loss, *smooth;
    int n, cap;
} History;

static void history_add(History *h, int64_t step, float loss) {
    if (h->n == h->cap) {
        h->cap = h->cap ? 2 * h->cap : 1024;
        h->step = xrealloc(h->step, (size_t)h->cap * sizeof(float));
        h->loss = xrealloc(h->loss, (size_t)h->cap * sizeof(float));
        h->smooth = xrealloc(h->smooth, (size_t)h->cap * sizeof(float));
    }
    h->step[h->n] = (float)step, h->loss[h->n] = loss;
    h->smooth[h->n] = h->n ? 0.98f * h->smooth[h->n - 1] + 0.02f * loss : loss;  // the noisy diffusion loss needs it
    h->n++;
}

static void history_plot(const History *h, const char *dir) {
    if (h->n < 2) return;
    char path[4096], err[256];
    snprintf(path, sizeof(path), "%s/loss.png", dir);
    const char *names[] = {"loss", "moving average (0.98)"};
    const float *xs[] = {h->step, h->step}, *ys[] = {h->loss, h->smooth};
    int counts[] = {h->n, h->n};
    if (plot_lines(path, "UNet training", "optimizer step", "loss", 1, 2, names, xs, ys, counts, err, sizeof(err)))
        fprintf(stderr, "doppel-diffuser: no loss curve: %s\n", err);
}

// a resumed run's curve starts with the steps the metrics file already holds (up to `upto`)
static void history_reload(History *h, const char *metrics, int64_t upto) {
    FILE *f = fopen(metrics, "r");
    if (!f) return;
    char line[1024];
    while (fgets(line, sizeof(line), f)) {
        json_t *j = json_loads(line, 0, NULL);
        json_t *st = json_object_get(j, "step"), *l = json_object_get(j, "loss");
        if (json_is_integer(st) && json_is_number(l) && json_integer_value(st) <= upto)
            history_add(h, json_integer_value(st), (float)json_number_value(l));
        json_decref(j);
    }
    fclose(f);
}

// ---- the model folder ----
static int make_or_resume(UNetFolder *u, const TrainOptions *o, const LatentSource *src, int n_users, int resuming,
                          Rng *rng, char *err, size_t errlen) {
    if (resuming) return unet_folder_load(u, o->unet, 0, NULL, err, errlen);
    UNetConfig c;
    if (preset_unet(o->preset, n_users, &c)) cli_usage_error(TOOL, "unknown --preset '%s' (tiny, small, seed)", o->preset);
    c.in_channels = c.out_channels = src->C;
    c.sample_size = src->h;
    memset(u, 0, sizeof(*u));
    if (noise_schedule_init(&u->sched, o->T, o->beta, (float)o->beta_start, (float)o->beta_end, o->pred, err, errlen))
        return -1;
    unet_build(&u->model, &c);
    params_init(&u->model.ps, rng);
    u->config = json_object();
    unet_folder_set_schedule(u, &u->sched);
    json_t *d = unet_folder_doppel(u);
    json_object_set_new(d, "preset", json_string(o->preset));
    if (src->users) json_object_set(d, "users", src->users);
    u->users = json_object_get(d, "users");
    json_t *vae = json_object();
    json_object_set_new(vae, "latent_channels", json_integer(src->C));
    json_object_set_new(vae, "latent_size", json_integer(src->h));
    if (src->scaling_factor > 0) json_object_set_new(vae, "scaling_factor", json_real(src->scaling_factor));
    if (src->vae[0]) json_object_set_new(vae, "path", json_string(src->vae));
    json_object_set_new(d, "vae", vae);
    return 0;
}

static int save_all(UNetFolder *u, const char *dir, int64_t step, const Rng *rng, char *err, size_t errlen) {
    char path[4096];
    json_object_set_new(unet_folder_doppel(u), "step", json_integer(step));
    TrainMeta meta = {step, *rng};
    if (unet_folder_save(u, dir, 0, err, errlen) || checkpoint_save_state(dir, &u->model.ps, &meta, err, errlen)) return -1;
    if (!u->model.ps.ema) return 0;
    snprintf(path, sizeof(path), "%s/ema", dir);
    return unet_folder_save(u, path, 1, err, errlen);
}

static void write_grid(UNetFolder *u, VaeFolder *vae, const char *dir, int64_t step, uint64_t seed) {
    char path[4096], err[512];
    snprintf(path, sizeof(path), "%s/samples", dir);
    if (mkdir_p(path, err, sizeof(err))) return (void)fprintf(stderr, "doppel-diffuser: no sample grid: %s\n", err);
    snprintf(path, sizeof(path), "%s/samples/step_%06lld.png", dir, (long long)step);
    ParamSet *ps = &u->model.ps;
    float *raw = ps->data;
    if (ps->ema) ps->data = ps->ema;  // sample with the EMA weights, as sampling does
    int rc = diffuser_sample_grid(&u->model, &u->sched, vae, 4, 2.0f, seed, path, err, sizeof(err));
    ps->data = raw;
    if (rc) fprintf(stderr, "doppel-diffuser: no sample grid: %s\n", err);
    else fprintf(stderr, "doppel-diffuser: samples at step %lld: %s\n", (long long)step, path);
}

int diffuser_train_main(int argc, char **argv) {
    TrainOptions o = parse_train(argc, argv);
    char err[512], path[4096];
    struct stat st;
    LatentSource src;
    if (latents_open(&src, o.cache, o.in, o.seed, o.augment, err, sizeof(err)))
        return fprintf(stderr, "doppel-diffuser: %s\n", err), EXIT_RUNTIME;
    snprintf(path, sizeof(path), "%s/%s", o.unet, CKPT_STATE);
    int resuming = o.resume && stat(path, &st) == 0;
    if (o.resume && !resuming) fprintf(stderr, "doppel-diffuser: --resume: no %s yet, starting fresh\n", path);
    // users: the data's table, else --users, else the largest label of a cache + 1
    int n_users = src.users ? (int)json_array_size(src.users) : o.users;
    for (int64_t i = 0; !src.users && !o.users && i < src.n; i++)
        if (src.lab[i] + 1 > n_users) n_users = src.lab[i] + 1;
    if (n_users < 1) cli_usage_error(TOOL, "the stream names no users: give --users N");
    for (int64_t i = 0; i < src.n; i++)
        if (src.lab[i] >= n_users)
            return fprintf(stderr, "doppel-diffuser: latent %lld has label %d but there are %d users\n", (long long)i,
                           src.lab[i], n_users), EXIT_RUNTIME;
    src.n_users = n_users;

    Rng rng;
    rng_seed(&rng, o.seed + 0xd1ff);
    UNetFolder u;
    if (make_or_resume(&u, &o, &src, n_users, resuming, &rng, err, sizeof(err)))
        return fprintf(stderr, "doppel-diffuser: %s\n", err), EXIT_RUNTIME;
    UNet2DModel *m = &u.model;
    m->grad_checkpoint = o.grad_checkpoint;
    if (m->cfg.in_channels != src.C || m->cfg.sample_size != src.h || src.h != src.w)
        return fprintf(stderr, "doppel-diffuser: latents are (%d, %d, %d) but %s takes (%d, %d, %d)\n", src.C, src.h, src.w,
                       o.unet, m->cfg.in_channels, m->cfg.sample_size, m->cfg.sample_size), EXIT_RUNTIME;
    if (m->cfg.num_class_embeds != n_users + 1)
        return fprintf(stderr, "doppel-diffuser: the data has %d users but %s has num_class_embeds %d (users + 1)\n", n_users,
                       o.unet, m->cfg.num_class_embeds), EXIT_RUNTIME;
    VaeFolder vae;
    int have_vae = 0;
    if (o.vae) {
        if (vae_folder_load(&vae, o.vae, err, sizeof(err))) return fprintf(stderr, "doppel-diffuser: %s\n", err), EXIT_RUNTIME;
        have_vae = 1;
        if (unet_vae_compatible(&m->cfg, u.users, &vae.model.cfg, vae.users, err, sizeof(err)))
            return fprintf(stderr, "doppel-diffuser: %s and %s do not fit: %s\n", o.unet, o.vae, err), EXIT_RUNTIME;
    }
    AdamW opt;
    adamw_init(&opt, &m->ps, (float)o.lr, 0.9f, 0.999f, 1e-8f, (float)o.wd);
    EmaConfig emac = ema_config_default();
    if (o.ema > 0) emac.decay = (float)o.ema, ema_init(&m->ps);
    TrainMeta meta = {0};
    int64_t batch_no = 0;  // batches consumed (the cache's position; a stream's count)
    if (resuming) {
        if (checkpoint_load_state(o.unet, &m->ps, &meta, err, sizeof(err)))
            return fprintf(stderr, "doppel-diffuser: %s\n", err), EXIT_RUNTIME;
        opt.step = meta.step, rng = meta.rng, batch_no = meta.step * o.accum;
        fprintf(stderr, "doppel-diffuser: resuming %s at step %lld\n", o.unet, (long long)meta.step);
        if (src.sock) {  // a stream: skip what the run before used (the first frame is held already)
            Arena a;
            arena_init(&a, 0);
            Ctx c2;
            ctx_init(&c2, &m->ps, &a, &rng);
            Tensor x;
            int32_t *y;
            for (int64_t k = 0; k < batch_no; k++) {
                arena_reset(&a);
                if (!latents_batch(&src, &c2, k, o.batch, &x, &y)) return fprintf(stderr, "doppel-diffuser: stream ended while skipping\n"), EXIT_RUNTIME;
            }
            ctx_free(&c2), arena_free(&a);
        }
    }
    if (mkdir_p(o.unet, err, sizeof(err))) return fprintf(stderr, "doppel-diffuser: %s\n", err), EXIT_RUNTIME;
    if (!o.metrics) snprintf(path, sizeof(path), "%s/metrics.jsonl", o.unet);
    MetricsLog *ml = metrics_open(o.metrics ? o.metrics : path, err, sizeof(err));
    if (!ml) fprintf(stderr, "doppel-diffuser: no metrics log: %s\n", err);
    int gpu = device_choose(o.device, "doppel-diffuser");
    if (gpu) fprintf(stderr, "doppel-diffuser: training on %s\n", cuda_device_name());
    Compute cp;  // on the GPU: parameters, gradients, AdamW moments and EMA live there between checkpoints
    compute_init(&cp, &m->ps, &rng, gpu);
    compute_precision(&cp, o.precision, "doppel-diffuser");
    LossScaler scaler;  // fp16 GEMMs: dynamic loss scaling, as torch's GradScaler
    loss_scaler_init(&scaler, gpu && cuda_get_precision() == PREC_FP16);
    if (scaler.enabled) fprintf(stderr, "doppel-diffuser: fp16 GEMMs with dynamic loss scaling (from %g)\n", (double)scaler.scale);
    Ctx *ctx = &cp.ctx;
    ParamSet *ps = ctx->ps;
    ctx->train = 1;
    DiffusionLossConfig lc = {(float)o.dropout, (float)o.snr_gamma};
    History hist = {0};
    if (resuming) history_reload(&hist, o.metrics ? o.metrics : path, opt.step);
    char batch[32];
    if (src.sock) snprintf(batch, sizeof(batch), "the stream's size");
    else snprintf(batch, sizeof(batch), "%d", o.batch);
    fprintf(stderr, "doppel-diffuser: %s UNet (%zu parameters), %d users + 'no user', latents %dx%dx%d, %s, %s schedule, %d steps x %d batch(es) of %s\n",
            o.preset, params_count_floats(&m->ps), n_users, src.C, src.h, src.w, prediction_type_name(u.sched.prediction),
            beta_schedule_name(u.sched.beta_schedule), o.steps, o.accum, batch);
    if (m->grad_checkpoint) fprintf(stderr, "doppel-diffuser: --grad-checkpoint: UNet block activations are recomputed in the backward\n");
    Progress p;
    progress_start(&p, "train unet", o.steps, "step");
    int stop = o.stop_at && o.stop_at < o.steps ? o.stop_at : o.steps, fails = 0, rc = EXIT_OK;
    while (opt.step < stop && !zsock_interrupted()) {
        compute_zero_grad(&cp);
        DiffusionLosses sum = {0};
        int ok = 1, n = 0;
        for (int a = 0; a < o.accum; a++) {
            arena_reset(&cp.arena);
            Tensor x;
            int32_t *y;
            if (!latents_batch(&src, ctx, batch_no, o.batch, &x, &y)) {
                ok = 0;
                break;
            }
            batch_no++;
            DiffusionLosses l;
            diffusion_train_step(ctx, m, &u.sched, x, y, &lc, scaler.scale / o.accum, &l);
            sum.loss += l.loss / o.accum, sum.mse += l.mse / o.accum, sum.dropped += l.dropped, n += x.N;
        }
        if (!ok) {
            fprintf(stderr, "doppel-diffuser: the stream ended at step %lld\n", (long long)opt.step);
            break;
        }
        float unscale;
        int finite = isfinite(sum.loss) && OP(ctx, grads_finite, ps);
        if (scaler.enabled && !loss_scaler_update(&scaler, finite, &unscale) && isfinite(sum.loss)) {
            continue;  // an fp16 overflow in the gradients: the step is skipped and the scale halved
        }
        if (scaler.enabled && finite) OP(ctx, grads_scale, ps, unscale);
        if (!finite) {
            fprintf(stderr, "doppel-diffuser: step %lld: loss or gradients are not finite; skipping the step\n",
                    (long long)opt.step + 1);
            if (++fails >= 5) {
                fprintf(stderr, "doppel-diffuser: 5 non-finite steps in a row: stopping (lower --lr?)\n");
                rc = EXIT_RUNTIME;
                break;
            }
            continue;
        }
        fails = 0;
        float norm = o.clip > 0 ? OP(ctx, clip_grad_norm, ps, (float)o.clip) : OP(ctx, grad_global_norm, ps);
        float lr = lr_at(o.sched, (float)o.lr, opt.step, o.warmup, o.steps);
        OP(ctx, adamw_step, &opt, ps, lr);
        if (o.ema > 0) OP(ctx, ema_update, ps, ema_decay(&emac, opt.step));
        history_add(&hist, opt.step, sum.loss);
        if (ml) {
            char line[384];
            snprintf(line, sizeof(line), "{\"step\":%lld,\"loss\":%.6g,\"mse\":%.6g,\"dropped\":%d,\"samples\":%d,\"grad_norm\":%.6g,\"lr\":%.6g,\"loss_scale\":%g}",
                     (long long)opt.step, sum.loss, sum.mse, sum.dropped, n, norm, lr, (double)scaler.scale);
            metrics_write(ml, line);
        }
        char extra[96];
        snprintf(extra, sizeof(extra), "loss %.4f (avg %.4f)", sum.loss, hist.smooth[hist.n - 1]);
        progress_update(&p, opt.step, extra);
        int saving = opt.step % o.save_every == 0 || opt.step == stop;
        int gridding = have_vae && o.sample_every && opt.step % o.sample_every == 0 && opt.step != stop;
        if (saving || gridding) compute_params_to_host(&cp);  // the checkpoint and the grid read the host copy
        if (saving) {
            if (save_all(&u, o.unet, opt.step, &rng, err, sizeof(err)))
                fprintf(stderr, "doppel-diffuser: checkpoint failed: %s\n", err), rc = EXIT_RUNTIME;
            history_plot(&hist, o.unet);
        }
        if (gridding)
            write_grid(&u, &vae, o.unet, opt.step, o.seed);
    }
    progress_finish(&p, NULL);
    compute_params_to_host(&cp);
    if (save_all(&u, o.unet, opt.step, &rng, err, sizeof(err)))
        fprintf(stderr, "doppel-diffuser: final checkpoint failed: %s\n", err), rc = EXIT_RUNTIME;
    history_plot(&hist, o.unet);
    if (have_vae && !zsock_interrupted()) write_grid(&u, &vae, o.unet, opt.step, o.seed);
    fprintf(stderr, "doppel-diffuser: saved %s at step %lld%s\n", o.unet, (long long)opt.step,
            zsock_interrupted() ? " (interrupted)" : "");
    free(hist.step), free(hist.loss), free(hist.smooth);
    metrics_close(&ml);
    compute_free(&cp);
    if (have_vae) vae_folder_free(&vae);
    unet_folder_free(&u);
    latents_close(&src);
    zsock_term();
    return rc;
}

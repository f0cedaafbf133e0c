// doppel-encoder: trains diffusers' AutoencoderKL on a spectrogram stream (train), turns image
// batches into scaled latents (encode), and measures reconstructions (check, in check.c).
#include <getopt.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <zmq.h>

#include "check.h"
#include "cli/cli.h"
#include "io/checkpoint.h"
#include "io/fileio.h"
#include "io/safetensors.h"
#include "models/vae_folder.h"
#include "net/zsock.h"
#include "optim/adamw.h"
#include "optim/clip.h"
#include "optim/ema.h"
#include "optim/lr_schedule.h"
#include "models/patch_disc.h"
#include "models/vae_train.h"
#include "wire/frame.h"

#define TOOL "encoder"

int encoder_check_main(int argc, char **argv);

static const char *USAGE =
    "usage: doppel-encoder train|encode|check [options]\n"
    "\n"
    "examples:\n"
    "  doppel-loader --data ../shared/data/gait10 --resolution 64 --shuffle --forever --augment &\n"
    "  doppel-encoder train --in '>tcp://127.0.0.1:5555' --vae runs/vae --preset small --steps 2000\n"
    "  doppel-encoder encode --vae runs/vae --in '>tcp://127.0.0.1:5555' --out @tcp://127.0.0.1:5556\n"
    "  doppel-encoder encode --vae runs/vae --in '>tcp://127.0.0.1:5555' --cache runs/latents.safetensors\n"
    "  doppel-encoder check --vae runs/vae --in '>tcp://127.0.0.1:5555' --report runs/vae-check\n"
    "\n"
    "train: --in EP --vae DIR [--preset tiny|small|seed (small)] [--steps N (2000)] [--lr 1e-4]\n"
    "       [--warmup 100] [--schedule cosine|constant|constant_with_warmup|linear] [--accum A (1)]\n"
    "       [--loss l1|mse (l1)] [--kl-weight B (1e-6)] [--ssim-weight W (0)] [--spectral-weight W (0)]\n"
    "       [--weight-decay 0.01] [--clip 1.0] [--ema DECAY (off)] [--save-every K (500)] [--resume]\n"
    "       [--metrics FILE (DIR/metrics.jsonl)] [--seed S] [--threads N] [--stop-at K]\n"
    "       (--stop-at: checkpoint and stop after step K, keeping the schedule of --steps)\n"
    "       [--init-from VAE] start from a trained VAE's weights (a fresh optimizer and step count;\n"
    "       checkpoints go to --vae DIR)   [--decoder-only] train the decoder alone (needs --init-from\n"
    "       or --resume): the encoder, and so the latents and a diffusion model trained on them, stay\n"
    "       as they are, and so does the scaling factor\n"
    "       [--perceptual-judge JUDGE] [--perceptual-weight W (1.0)] a feature reconstruction term in a\n"
    "       doppel-validator judge's space (conv_bn judges): sum over its blocks of the mean squared\n"
    "       feature difference between reconstruction and input. Score with another judge.\n"
    "       [--disc-weight W (0: off)] [--disc-start N (steps/2)] [--disc-adaptive] [--disc-lr LR]\n"
    "       a patch discriminator (hinge loss) from step N, as Stable Diffusion's autoencoder training;\n"
    "       its weights and optimizer state live in DIR/discriminator/\n"
    "       Checkpoints are diffusers folders (atomic) + training_state.safetensors; --resume\n"
    "       continues exactly, skipping the stream batches already consumed. At the end the latent\n"
    "       scaling factor (1/std of the latents) is measured and written to config.json.\n"
    "encode: --vae DIR --in EP [--out EP] [--cache FILE] [--sample] [--seed S]\n"
    "       latent = (posterior mean, or a sample with --sample) * scaling_factor; labels, seeds and\n"
    "       meta pass through; --cache writes every latent + label + seed to one safetensors file.\n"
    "check: --vae DIR --in EP --report DIR   (PSNR, SSIM, L1 per user; latent stats; a grid)\n"
    "common: --device cpu|cuda|auto (auto: the GPU when there is one; train, encode and check run\n"
    "       there), --help, --version\n";

typedef struct {
    const char *in, *out, *vae, *preset, *metrics, *cache, *device, *init_from, *perc_judge;
    int steps, warmup, accum, save_every, resume, threads, sample, mse, stop_at, disc_start, disc_adaptive, decoder_only;
    double lr, kl, ssim_w, spec_w, wd, clip, ema, disc_w, disc_lr, perc_w;
    uint64_t seed;
    LrSchedule sched;
} Options;

static Options parse(int argc, char **argv, int train) {
    Options o = {.device = "auto", .preset = "small", .steps = 2000, .disc_start = -1, .warmup = 100, .accum = 1, .save_every = 500, .lr = 1e-4,
                 .kl = 1e-6, .wd = 0.01, .clip = 1.0, .sched = LR_COSINE_WARMUP, .perc_w = 1.0};
    static const struct option opts[] = {
        {"in", 1, 0, 'i'}, {"out", 1, 0, 'o'}, {"vae", 1, 0, 'v'}, {"preset", 1, 0, 'p'}, {"steps", 1, 0, 'n'},
        {"lr", 1, 0, 'l'}, {"warmup", 1, 0, 'w'}, {"schedule", 1, 0, 'S'}, {"accum", 1, 0, 'a'}, {"loss", 1, 0, 'L'},
        {"kl-weight", 1, 0, 'k'}, {"ssim-weight", 1, 0, 's'}, {"spectral-weight", 1, 0, 'f'}, {"weight-decay", 1, 0, 'd'},
        {"clip", 1, 0, 'c'}, {"ema", 1, 0, 'e'}, {"save-every", 1, 0, 'K'}, {"resume", 0, 0, 'r'}, {"metrics", 1, 0, 'm'},
        {"seed", 1, 0, 'x'}, {"threads", 1, 0, 't'}, {"cache", 1, 0, 'C'}, {"sample", 0, 0, 'P'}, {"stop-at", 1, 0, 'T'}, {"disc-weight", 1, 0, 'D'}, {"disc-start", 1, 0, 'B'},
        {"disc-adaptive", 0, 0, 'A'}, {"disc-lr", 1, 0, 'R'}, {"device", 1, 0, 'G'}, {"help", 0, 0, 'h'},
        {"init-from", 1, 0, 'I'}, {"decoder-only", 0, 0, 'O'}, {"perceptual-judge", 1, 0, 'J'},
        {"perceptual-weight", 1, 0, 'W'},
        {"version", 0, 0, 'V'}, {0, 0, 0, 0}};
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case 'i': o.in = optarg; break;
        case 'o': o.out = optarg; break;
        case 'v': o.vae = optarg; break;
        case 'p': o.preset = optarg; break;
        case 'n': o.steps = (int)cli_parse_long(TOOL, "--steps", optarg, 1, 100000000); break;
        case 'l': o.lr = cli_parse_double(TOOL, "--lr", optarg, 0, 10); break;
        case 'w': o.warmup = (int)cli_parse_long(TOOL, "--warmup", optarg, 0, 100000000); break;
        case 'S': if (lr_schedule_parse(optarg, &o.sched)) cli_usage_error(TOOL, "unknown --schedule '%s'", optarg); break;
        case 'a': o.accum = (int)cli_parse_long(TOOL, "--accum", optarg, 1, 4096); break;
        case 'L':
            if (!strcmp(optarg, "mse")) o.mse = 1;
            else if (strcmp(optarg, "l1")) cli_usage_error(TOOL, "--loss must be l1 or mse");
            break;
        case 'k': o.kl = cli_parse_double(TOOL, "--kl-weight", optarg, 0, 1e6); break;
        case 's': o.ssim_w = cli_parse_double(TOOL, "--ssim-weight", optarg, 0, 1e6); break;
        case 'f': o.spec_w = cli_parse_double(TOOL, "--spectral-weight", optarg, 0, 1e6); break;
        case 'd': o.wd = cli_parse_double(TOOL, "--weight-decay", optarg, 0, 10); break;
        case 'c': o.clip = cli_parse_double(TOOL, "--clip", optarg, 0, 1e9); break;
        case 'e': o.ema = cli_parse_double(TOOL, "--ema", optarg, 0, 1); break;
        case 'K': o.save_every = (int)cli_parse_long(TOOL, "--save-every", optarg, 1, 100000000); break;
        case 'r': o.resume = 1; break;
        case 'm': o.metrics = optarg; break;
        case 'x': o.seed = (uint64_t)cli_parse_long(TOOL, "--seed", optarg, 0, (long)(~0UL >> 1)); break;
        case 't': o.threads = (int)cli_parse_long(TOOL, "--threads", optarg, 1, 1024); break;
        case 'C': o.cache = optarg; break;
        case 'P': o.sample = 1; break;
        case 'D': o.disc_w = cli_parse_double(TOOL, "--disc-weight", optarg, 0, 1e6); break;
        case 'B': o.disc_start = (int)cli_parse_long(TOOL, "--disc-start", optarg, 0, 100000000); break;
        case 'A': o.disc_adaptive = 1; break;
        case 'R': o.disc_lr = cli_parse_double(TOOL, "--disc-lr", optarg, 0, 10); break;
        case 'G': o.device = cli_parse_device(TOOL, optarg); break;
        case 'I': o.init_from = optarg; break;
        case 'O': o.decoder_only = 1; break;
        case 'J': o.perc_judge = optarg; break;
        case 'W': o.perc_w = cli_parse_double(TOOL, "--perceptual-weight", optarg, 0, 1e6); break;
        case 'T': o.stop_at = (int)cli_parse_long(TOOL, "--stop-at", optarg, 1, 100000000); break;
        case 'h': fputs(USAGE, stdout); exit(EXIT_OK);
        case 'V': cli_print_version(TOOL); exit(EXIT_OK);
        default: cli_usage_error(TOOL, "unknown option for '%s'", argv[0]);
        }
    }
    if (optind < argc) cli_usage_error(TOOL, "unexpected argument '%s'", argv[optind]);
    if (!o.vae) cli_usage_error(TOOL, "--vae DIR is required");
    if (!o.in) cli_usage_error(TOOL, "--in EP is required");
    if (!train && !o.out && !o.cache) cli_usage_error(TOOL, "encode needs --out EP and/or --cache FILE");
    if (o.decoder_only && !o.init_from && !o.resume)
        cli_usage_error(TOOL, "--decoder-only trains a trained VAE's decoder: give --init-from VAE (or --resume)");
    if (o.threads) omp_set_num_threads(o.threads);
    return o;
}

// ---- receiving image batches ----
typedef struct {
    void *sock;
    Received r;
    int have;
    json_t *users;  // from the latest frame's meta (owned)
    int ended;
} Input;

// next batch frame with an `image` tensor; 0 at end of stream or interruption
static int next_images(Input *in, const WireTensor **img, const WireTensor **label, const WireTensor **seed) {
    char err[512];
    for (;;) {
        if (in->have) received_release(&in->r), in->have = 0;
        if (zsock_interrupted() || in->ended) return 0;
        int rc = zsock_recv_frame(in->sock, &in->r, NULL, 500, err, sizeof(err));
        if (rc < 0) {
            fprintf(stderr, "doppel-encoder: bad frame skipped: %s\n", err);
            continue;
        }
        if (rc == 0) continue;
        in->have = 1;
        Frame *f = &in->r.frame;
        if (f->kind == FRAME_END) {
            in->ended = 1;
            return 0;
        }
        if (f->kind != FRAME_BATCH) continue;
        if (frame_check_batch(f, err, sizeof(err)) || !(*img = frame_tensor(f, WIRE_IMAGE))) {
            fprintf(stderr, "doppel-encoder: frame %llu skipped: %s\n", (unsigned long long)f->seq,
                    *err ? err : "no image tensor");
            continue;
        }
        *label = frame_tensor(f, WIRE_LABEL);
        *seed = frame_tensor(f, WIRE_SEED);
        json_t *u = f->meta ? json_object_get(f->meta, "users") : NULL;
        if (json_is_array(u)) {
            json_decref(in->users);
            in->users = json_deep_copy(u);
        }
        return 1;
    }
}

static Tensor image_tensor(Ctx *ctx, const WireTensor *t) {
    Tensor x = ctx_tensor(ctx, (int)t->shape[0], (int)t->shape[1], (int)t->shape[2], (int)t->shape[3]);
    if (!ctx->cuda) {
        wire_tensor_f32(x.d, t);
        return x;
    }
    float *h = xmalloc(tensor_numel(x) * sizeof(float));  // the wire's dtype to f32 on the host, then up
    wire_tensor_f32(h, t);
    ctx_put(ctx, x.d, h, tensor_numel(x) * sizeof(float));
    free(h);
    return x;
}

// the doppel block records how far training got and the user table of the data
static void note_progress(VaeFolder *v, int64_t step, json_t *users) {
    json_t *d = vae_folder_doppel(v);
    if (!d) return;
    json_object_set_new(d, "step", json_integer(step));
    if (users) json_object_set(d, "users", users);
}

static void save_disc(PatchDiscriminator *d, const char *dir, int64_t step, const Rng *rng) {
    char err[512];
    json_t *cfg = json_pack("{s:s, s:i, s:i, s:s}", "_class_name", "NLayerDiscriminator", "ndf", 32, "n_layers", 3,
                            "norm", "GroupNorm");
    TrainMeta meta = {step, *rng};
    patch_disc_to_host(d);  // from the GPU when it trains there
    if (checkpoint_save_model(dir, &d->ps, d->ps.data, cfg, err, sizeof(err)) ||
        checkpoint_save_state(dir, &d->ps, &meta, err, sizeof(err)))
        fprintf(stderr, "doppel-encoder: discriminator checkpoint failed: %s\n", err);
    json_decref(cfg);
}

// ---- train ----
static int train(Options o) {
    char err[512], path[4096];
    Input in = {0};
    in.sock = zsock_open(ZMQ_PULL, o.in, 0, err, sizeof(err));
    if (!in.sock) return fprintf(stderr, "doppel-encoder: %s\n", err), EXIT_RUNTIME;
    const WireTensor *img, *lab, *sd;
    fprintf(stderr, "doppel-encoder: waiting for images on %s\n", o.in);
    if (!next_images(&in, &img, &lab, &sd)) {
        fprintf(stderr, "doppel-encoder: the stream ended before any image arrived\n");
        return EXIT_RUNTIME;
    }
    int C = (int)img->shape[1], H = (int)img->shape[2], W = (int)img->shape[3];

    VaeFolder v;
    TrainMeta meta = {0};
    Rng rng;
    rng_seed(&rng, o.seed + 0x5eed);
    snprintf(path, sizeof(path), "%s/%s", o.vae, CKPT_STATE);
    struct stat st;
    int resuming = o.resume && stat(path, &st) == 0;
    if (o.resume && !resuming) fprintf(stderr, "doppel-encoder: --resume: no %s yet, starting fresh\n", path);
    if (resuming || o.init_from) {
        const char *from = resuming ? o.vae : o.init_from;
        if (vae_folder_load(&v, from, err, sizeof(err))) return fprintf(stderr, "doppel-encoder: %s\n", err), EXIT_RUNTIME;
        if (!resuming) fprintf(stderr, "doppel-encoder: starting from the weights of %s\n", from);
    } else {
        VaeConfig c;
        if (preset_vae(o.preset, &c)) cli_usage_error(TOOL, "unknown --preset '%s' (tiny, small, seed)", o.preset);
        c.in_channels = c.out_channels = C;
        c.sample_size = H;
        memset(&v, 0, sizeof(v));
        vae_build(&v.model, &c);
        params_init(&v.model.ps, &rng);
        v.config = json_object();
    }
    AutoencoderKL *m = &v.model;
    int f = vae_downscale(&m->cfg);
    if (C != m->cfg.in_channels || H % f || W % f)
        return fprintf(stderr, "doppel-encoder: images are %dx%dx%d; the VAE takes %d channels and sides divisible by %d\n",
                       C, H, W, m->cfg.in_channels, f), EXIT_RUNTIME;
    if (o.decoder_only) {  // frozen: no gradient and no decay, so AdamW leaves them exactly as they are
        int frozen = 0;
        for (int i = 0; i < m->ps.count; i++)
            if (!strncmp(m->ps.info[i].name, "encoder.", 8) || !strncmp(m->ps.info[i].name, "quant_conv.", 11))
                m->ps.info[i].no_decay = 1, frozen++;
        fprintf(stderr, "doppel-encoder: decoder only: %d encoder tensors frozen\n", frozen);
    }
    AdamW opt;
    adamw_init(&opt, &m->ps, (float)o.lr, 0.9f, 0.999f, 1e-8f, (float)o.wd);
    EmaConfig emac = ema_config_default();
    if (o.ema > 0) emac.decay = (float)o.ema, ema_init(&m->ps);
    if (resuming) {
        if (checkpoint_load_state(o.vae, &m->ps, &meta, err, sizeof(err)))
            return fprintf(stderr, "doppel-encoder: %s\n", err), EXIT_RUNTIME;
        opt.step = meta.step;
        rng = meta.rng;
        fprintf(stderr, "doppel-encoder: resuming %s at step %lld; skipping the %lld batches already used\n", o.vae,
                (long long)meta.step, (long long)meta.step * o.accum);
        for (int64_t k = 1; k < meta.step * o.accum; k++)  // the first was received above
            if (!next_images(&in, &img, &lab, &sd)) return fprintf(stderr, "doppel-encoder: stream ended while skipping\n"), EXIT_RUNTIME;
        if (meta.step > 0 && !next_images(&in, &img, &lab, &sd)) return EXIT_RUNTIME;
    }
    // the optional patch discriminator, with its own optimizer (betas 0.5, 0.9 as taming)
    PatchDiscriminator disc;
    AdamW dopt;
    DiscLossConfig dc = {0};
    char dpath[4096];
    snprintf(dpath, sizeof(dpath), "%s/discriminator", o.vae);
    if (o.disc_w > 0) {
        patch_disc_build(&disc, C, 32, 3);
        Rng drng;  // its own stream: a resumed run must not shift the VAE's
        rng_seed(&drng, o.seed + 0xd15c);
        patch_disc_init(&disc, &drng);
        adamw_init(&dopt, &disc.ps, (float)(o.disc_lr > 0 ? o.disc_lr : o.lr), 0.5f, 0.9f, 1e-8f, 0.0f);
        dc = (DiscLossConfig){&disc, &dopt, (float)o.disc_w, o.disc_adaptive, dopt.lr, (float)o.clip,
                              o.disc_start >= 0 ? o.disc_start : o.steps / 2};
        TrainMeta dmeta;
        if (resuming && stat(dpath, &st) == 0) {
            if (checkpoint_load_model(dpath, &disc.ps, err, sizeof(err)) || checkpoint_load_state(dpath, &disc.ps, &dmeta, err, sizeof(err)))
                return fprintf(stderr, "doppel-encoder: discriminator: %s\n", err), EXIT_RUNTIME;
            dopt.step = dmeta.step;
        }
    }
    // the doppel block of config.json
    json_t *dop = json_object();
    json_object_set_new(dop, "channels", json_integer(C));
    json_object_set_new(dop, "resolution", json_integer(H));
    json_object_set_new(dop, "preset", json_string(o.preset));
    json_t *im = in.r.frame.meta;
    json_t *cm = im ? json_object_get(im, "colormap") : NULL, *src = im ? json_object_get(im, "source") : NULL;
    json_object_set_new(dop, "colormap", json_string(json_is_string(cm) ? json_string_value(cm) : "jet"));
    if (json_is_string(src)) json_object_set_new(dop, "source", json_string(json_string_value(src)));
    json_object_set_new(v.config, "doppel", dop);

    if (!o.metrics) snprintf(path, sizeof(path), "%s/metrics.jsonl", o.vae);
    if (mkdir_p(o.vae, err, sizeof(err))) return fprintf(stderr, "doppel-encoder: %s\n", err), EXIT_RUNTIME;
    MetricsLog *ml = metrics_open(o.metrics ? o.metrics : path, err, sizeof(err));
    if (!ml) fprintf(stderr, "doppel-encoder: no metrics log: %s\n", err);
    LossHistory hist = {0};
    int gpu = device_choose(o.device, "doppel-encoder");
    if (gpu) fprintf(stderr, "doppel-encoder: training on %s\n", cuda_device_name());
    // the optional perceptual judge (eval mode, never trained here)
    JudgeNet judge;
    ParamSet judge_mirror;
    VaeTrainExtras ex = {NULL, NULL, (float)o.perc_w, o.decoder_only};
    if (o.perc_judge) {
        if (judge_folder_load(&judge, o.perc_judge, err, sizeof(err))) return fprintf(stderr, "doppel-encoder: %s\n", err), EXIT_RUNTIME;
        if (judge.cfg.block_type != JUDGE_CONV_BN || judge.cfg.channels != C || judge.cfg.resolution != H || H != W)
            return fprintf(stderr, "doppel-encoder: the perceptual judge %s is a %s judge for %dx%dx%d images; the term needs a "
                           "conv_bn judge for these %dx%dx%d images\n", o.perc_judge,
                           judge.cfg.block_type == JUDGE_CONV_BN ? "conv_bn" : "resnet", judge.cfg.channels,
                           judge.cfg.resolution, judge.cfg.resolution, C, H, W), EXIT_RUNTIME;
        ex.judge = &judge, ex.judge_ps = &judge.ps;
        if (gpu) cuda_params_mirror(&judge_mirror, &judge.ps), ex.judge_ps = &judge_mirror;
        fprintf(stderr, "doppel-encoder: perceptual term in the features of %s (weight %g)\n", o.perc_judge, o.perc_w);
    }
    Compute cp;
    compute_init(&cp, &m->ps, &rng, gpu);
    if (gpu && o.disc_w > 0) patch_disc_to_gpu(&disc);  // D's parameters and AdamW moments on the GPU too
    Ctx *ctx = &cp.ctx;
    ParamSet *ps = ctx->ps;
    float *momh = NULL;  // the moments on the host, for the latent statistics
    ctx->train = 1;
    TrainLossConfig lc = {o.mse, (float)o.kl, (float)o.ssim_w, (float)o.spec_w};
    double zsum = 0, zsq = 0, zn = 0;  // latent statistics over the last batches
    int scale_from = o.steps - (o.steps < 50 ? o.steps : 50);
    Progress p;
    progress_start(&p, "train vae", o.steps, "step");
    int fails = 0, rc = EXIT_OK;
    fprintf(stderr, "doppel-encoder: %s VAE (%zu parameters) on %dx%dx%d, %d steps x %d batch(es) of %d\n", o.preset,
            params_count_floats(&m->ps), C, H, W, o.steps, o.accum, (int)img->shape[0]);
    int stop = o.stop_at && o.stop_at < o.steps ? o.stop_at : o.steps;
    while (opt.step < stop && !zsock_interrupted()) {
        compute_zero_grad(&cp);
        TrainLosses sum = {0};
        int ok = 1;
        for (int a = 0; a < o.accum && ok; a++) {
            if (a > 0 && !next_images(&in, &img, &lab, &sd)) ok = 0;
            if (!ok) break;
            arena_reset(&cp.arena);
            Tensor x = image_tensor(ctx, img);
            TrainLosses l;
            Tensor mom = vae_train_step_extras(ctx, m, x, &lc, o.disc_w > 0 ? &dc : NULL, &ex, opt.step, 1.0f / o.accum, &l);
            train_losses_add(&sum, &l, 1.0f / o.accum);
            if (opt.step >= scale_from) {
                Tensor mh = mom;
                if (ctx->cuda) {
                    momh = xrealloc(momh, tensor_numel(mom) * sizeof(float));
                    ctx_get(ctx, momh, mom.d, tensor_numel(mom) * sizeof(float));
                    mh.d = momh;
                }
                latent_stats_add(mh, m->cfg.latent_channels, &zsum, &zsq, &zn);
            }
            if (a + 1 < o.accum) continue;
        }
        if (!ok) {
            fprintf(stderr, "doppel-encoder: the stream ended at step %lld\n", (long long)opt.step);
            break;
        }
        if (!isfinite(sum.total) || !OP(ctx, grads_finite, ps)) {
            fprintf(stderr, "doppel-encoder: step %lld: loss or gradients are not finite; skipping the step\n",
                    (long long)opt.step + 1);
            if (++fails >= 5) {
                fprintf(stderr, "doppel-encoder: 5 non-finite steps in a row: stopping (lower --lr?)\n");
                rc = EXIT_RUNTIME;
                break;
            }
        } else {
            fails = 0;
            float norm = o.clip > 0 ? OP(ctx, clip_grad_norm, ps, (float)o.clip) : OP(ctx, grad_global_norm, ps);
            float lr = lr_at(o.sched, (float)o.lr, opt.step, o.warmup, o.steps);
            OP(ctx, adamw_step, &opt, ps, lr);
            if (o.ema > 0) OP(ctx, ema_update, ps, ema_decay(&emac, opt.step));
            loss_history_add(&hist, opt.step, &sum);
            if (ml) {
                char line[512];
                snprintf(line, sizeof(line),
                         "{\"step\":%lld,\"loss\":%.6g,\"rec\":%.6g,\"kl\":%.6g,\"ssim\":%.6g,\"spectral\":%.6g,"
                         "\"perceptual\":%.6g,\"g_loss\":%.6g,\"d_loss\":%.6g,\"g_weight\":%.6g,\"grad_norm\":%.6g,\"lr\":%.6g}",
                         (long long)opt.step, sum.total, sum.rec, sum.kl, sum.ssim, sum.spectral, sum.perceptual, sum.g_loss,
                         sum.d_loss, sum.g_weight, norm, lr);
                metrics_write(ml, line);
            }
            char extra[96];
            if (o.perc_judge) snprintf(extra, sizeof(extra), "loss %.4f rec %.4f perc %.4f", sum.total, sum.rec, sum.perceptual);
            else snprintf(extra, sizeof(extra), "loss %.4f rec %.4f", sum.total, sum.rec);
            progress_update(&p, opt.step, extra);
        }
        if (opt.step % o.save_every == 0 || opt.step == stop) {
            compute_params_to_host(&cp);
            meta.step = opt.step, meta.rng = rng;
            note_progress(&v, opt.step, in.users);
            if (o.disc_w > 0) save_disc(&disc, dpath, dopt.step, &rng);
            if (vae_folder_save(&v, o.vae, 0, err, sizeof(err)) || checkpoint_save_state(o.vae, &m->ps, &meta, err, sizeof(err)))
                fprintf(stderr, "doppel-encoder: checkpoint failed: %s\n", err), rc = EXIT_RUNTIME;
            loss_history_plot(&hist, o.vae);
        }
        if (opt.step >= stop) break;
        if (!next_images(&in, &img, &lab, &sd)) {
            if (opt.step < o.steps) fprintf(stderr, "doppel-encoder: the stream ended at step %lld\n", (long long)opt.step);
            break;
        }
    }
    progress_finish(&p, NULL);
    if (o.decoder_only) {
        fprintf(stderr, "doppel-encoder: decoder only: scaling_factor stays %.5f (the encoder did not change)\n",
                m->cfg.scaling_factor);
    } else if (zn > 1) {  // the scaling factor diffusers multiplies latents by: 1 / std
        double mean = zsum / zn, var = zsq / zn - mean * mean;
        m->cfg.scaling_factor = var > 0 ? (float)(1.0 / sqrt(var)) : 1.0f;
        fprintf(stderr, "doppel-encoder: latent std %.4f over %.0f values -> scaling_factor %.5f\n", sqrt(var > 0 ? var : 0),
                zn, m->cfg.scaling_factor);
    }
    compute_params_to_host(&cp);
    meta.step = opt.step, meta.rng = rng;
    note_progress(&v, opt.step, in.users);
    if (o.disc_w > 0) save_disc(&disc, dpath, dopt.step, &rng), patch_disc_free(&disc);
    if (vae_folder_save(&v, o.vae, 0, err, sizeof(err)) || checkpoint_save_state(o.vae, &m->ps, &meta, err, sizeof(err)))
        fprintf(stderr, "doppel-encoder: final checkpoint failed: %s\n", err), rc = EXIT_RUNTIME;
    if (o.ema > 0) {
        snprintf(path, sizeof(path), "%s/ema", o.vae);
        if (vae_folder_save(&v, path, 1, err, sizeof(err))) fprintf(stderr, "doppel-encoder: %s\n", err);
    }
    loss_history_plot(&hist, o.vae);
    fprintf(stderr, "doppel-encoder: saved %s at step %lld%s\n", o.vae, (long long)opt.step,
            zsock_interrupted() ? " (interrupted)" : "");
    loss_history_free(&hist);
    metrics_close(&ml);
    if (in.have) received_release(&in.r);
    json_decref(in.users);
    zsock_close(&in.sock);
    zsock_term();
    free(momh);
    compute_free(&cp);
    if (o.perc_judge) {
        if (gpu) cuda_params_free(&judge_mirror);
        judge_free(&judge);
    }
    vae_folder_free(&v);
    return rc;
}

// ---- encode ----
static int write_cache(const char *path, float *lat, int32_t *lab, int64_t *seed, int64_t n, const int64_t *shape,
                       json_t *users, const char *vae, float scale) {
    char err[512];
    json_t *u = users ? users : json_array();
    char *us = json_dumps(u, JSON_COMPACT), sf[32];
    snprintf(sf, sizeof(sf), "%.8g", scale);
    const char *kv[] = {"users", us, "vae", vae, "scaling_factor", sf, "format", "doppel-latent-cache"};
    StEntry e[3] = {{"latent", ST_F32, 4, {n, shape[1], shape[2], shape[3]}, lat},
                    {"label", ST_I32, 1, {n}, lab},
                    {"seed", ST_I64, 1, {n}, seed}};
    int rc = st_save(path, e, 3, kv, 4, err, sizeof(err));
    if (rc) fprintf(stderr, "doppel-encoder: %s\n", err);
    else fprintf(stderr, "doppel-encoder: cached %lld latents in %s\n", (long long)n, path);
    free(us);
    if (!users) json_decref(u);
    return rc;
}

static int encode(Options o) {
    char err[512];
    VaeFolder v;
    if (vae_folder_load(&v, o.vae, err, sizeof(err))) return fprintf(stderr, "doppel-encoder: %s\n", err), EXIT_RUNTIME;
    AutoencoderKL *m = &v.model;
    Input in = {0};
    in.sock = zsock_open(ZMQ_PULL, o.in, 0, err, sizeof(err));
    void *out = o.out ? zsock_open(ZMQ_PUSH, o.out, 1, err, sizeof(err)) : NULL;
    if (!in.sock || (o.out && !out)) return fprintf(stderr, "doppel-encoder: %s\n", err), EXIT_RUNTIME;
    int gpu = device_choose(o.device, "doppel-encoder");
    if (gpu) fprintf(stderr, "doppel-encoder: encoding on %s\n", cuda_device_name());
    Rng rng;
    rng_seed(&rng, o.seed);
    Compute cp;
    compute_init(&cp, &m->ps, &rng, gpu);
    Ctx *ctx = &cp.ctx;
    float *momh = NULL, *zh = NULL;  // the posterior's moments and the latents, on the host
    size_t hcap = 0;
    float scale = m->cfg.scaling_factor;
    int L = m->cfg.latent_channels, f = vae_downscale(&m->cfg);
    float *cache = NULL;
    int32_t *clab = NULL;
    int64_t *cseed = NULL, cn = 0, ccap = 0, cshape[4] = {0}, sent = 0, frames = 0;
    const WireTensor *img, *lab, *sd;
    int rc = EXIT_OK;
    Progress p;
    progress_start(&p, "encode", 0, "img");
    while (next_images(&in, &img, &lab, &sd)) {
        int N = (int)img->shape[0], C = (int)img->shape[1], H = (int)img->shape[2], W = (int)img->shape[3];
        if (C != m->cfg.in_channels || H % f || W % f) {
            fprintf(stderr, "doppel-encoder: images are %dx%dx%d; the VAE takes %d channels and sides divisible by %d: skipped\n",
                    C, H, W, m->cfg.in_channels, f);
            continue;
        }
        arena_reset(&cp.arena);
        Tensor x = image_tensor(ctx, img);
        Tensor mom = vae_encode(ctx, m, x);  // [N, 2L, h, w]
        int h = mom.H, w = mom.W;
        size_t plane = (size_t)h * w, per = (size_t)L * plane;
        if ((size_t)N * per > hcap) {
            hcap = (size_t)N * per;
            momh = xrealloc(momh, 2 * hcap * sizeof(float)), zh = xrealloc(zh, hcap * sizeof(float));
        }
        ctx_get(ctx, momh, mom.d, 2 * (size_t)N * per * sizeof(float));
        for (int n = 0; n < N; n++) {
            const float *mean = momh + (size_t)n * 2 * per, *logvar = mean + per;
            float *zn = zh + (size_t)n * per;
            if (o.sample) {  // eps from the sample's own seed: any sample can be re-encoded alone
                Rng r;
                int64_t s = 0;
                if (sd) memcpy(&s, (const char *)sd->data + 8 * n, 8);
                rng_seed(&r, o.seed ^ (uint64_t)s ^ 0xe7c0de);
                for (size_t i = 0; i < per; i++) {
                    float lv = logvar[i] < -30 ? -30 : logvar[i] > 20 ? 20 : logvar[i];
                    zn[i] = (mean[i] + expf(0.5f * lv) * rng_normal(&r)) * scale;
                }
            } else {
                for (size_t i = 0; i < per; i++) zn[i] = mean[i] * scale;
            }
        }
        if (out) {
            Frame fr;
            frame_init(&fr, FRAME_BATCH, "encoder", (uint64_t)frames);
            const Frame *src = &in.r.frame;
            if (src->has_total) fr.has_total = 1, fr.total = src->total;
            json_t *meta = src->meta ? json_deep_copy(src->meta) : json_object();
            json_object_set_new(meta, "stage", json_string("encoder"));
            json_object_set_new(meta, "vae", json_string(o.vae));
            json_object_set_new(meta, "scaling_factor", json_real(scale));
            json_object_set_new(meta, "posterior", json_string(o.sample ? "sample" : "mean"));
            frame_set_meta(&fr, meta);
            json_decref(meta);
            frame_add_tensor(&fr, WIRE_LATENT, WDT_F32, 4, (int64_t[]){N, L, h, w}, zh);
            if (lab) frame_add_tensor(&fr, WIRE_LABEL, WDT_I32, 1, (int64_t[]){N}, lab->data);
            if (sd) frame_add_tensor(&fr, WIRE_SEED, WDT_I64, 1, (int64_t[]){N}, sd->data);
            int bad = zsock_send_frame(out, &fr, -1, err, sizeof(err));
            frame_release(&fr);
            if (bad) {
                if (!zsock_interrupted()) fprintf(stderr, "doppel-encoder: send failed: %s\n", err), rc = EXIT_RUNTIME;
                break;
            }
        }
        if (o.cache) {
            if (cn + N > ccap) {
                ccap = (cn + N) * 2;
                cache = xrealloc(cache, (size_t)ccap * per * sizeof(float));
                clab = xrealloc(clab, (size_t)ccap * sizeof(int32_t));
                cseed = xrealloc(cseed, (size_t)ccap * sizeof(int64_t));
            }
            memcpy(cache + (size_t)cn * per, zh, (size_t)N * per * sizeof(float));
            for (int n = 0; n < N; n++) {
                clab[cn + n] = -1, cseed[cn + n] = cn + n;
                if (lab) memcpy(&clab[cn + n], (const char *)lab->data + 4 * n, 4);
                if (sd) memcpy(&cseed[cn + n], (const char *)sd->data + 8 * n, 8);
            }
            cshape[1] = L, cshape[2] = h, cshape[3] = w;
            cn += N;
        }
        sent += N, frames++;
        progress_update(&p, sent, NULL);
    }
    progress_finish(&p, NULL);
    if (out && rc == EXIT_OK && in.ended) {  // pass the end of stream on, with our counts
        Frame fr;
        frame_init(&fr, FRAME_END, "encoder", (uint64_t)frames);
        fr.has_total = 1, fr.total = (uint64_t)sent;
        if (zsock_send_frame(out, &fr, 10000, err, sizeof(err))) fprintf(stderr, "doppel-encoder: end not sent: %s\n", err);
        frame_release(&fr);
        int linger = 600000;
        zmq_setsockopt(out, ZMQ_LINGER, &linger, sizeof(linger));
    }
    if (o.cache && cn && write_cache(o.cache, cache, clab, cseed, cn, cshape, in.users, o.vae, scale)) rc = EXIT_RUNTIME;
    fprintf(stderr, "doppel-encoder: encoded %lld images in %lld frames%s\n", (long long)sent, (long long)frames,
            zsock_interrupted() ? " (interrupted)" : "");
    free(cache), free(clab), free(cseed), free(momh), free(zh);
    if (in.have) received_release(&in.r);
    json_decref(in.users);
    zsock_close(&in.sock);
    zsock_close(&out);
    zsock_term();
    compute_free(&cp);
    vae_folder_free(&v);
    return rc;
}

int main(int argc, char **argv) {
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
        fputs(USAGE, argc < 2 ? stderr : stdout);
        return argc < 2 ? EXIT_USAGE : EXIT_OK;
    }
    if (!strcmp(argv[1], "--version")) return cli_print_version(TOOL), EXIT_OK;
    zsock_install_signals();
    if (!strcmp(argv[1], "train")) return train(parse(argc - 1, argv + 1, 1));
    if (!strcmp(argv[1], "encode")) return encode(parse(argc - 1, argv + 1, 0));
    if (!strcmp(argv[1], "check")) return encoder_check_main(argc - 1, argv + 1);
    cli_usage_error(TOOL, "unknown command '%s' (train, encode, check)", argv[1]);
}

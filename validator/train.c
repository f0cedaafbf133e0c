// train.c: `doppel-validator train` — fits the judge (models/judge.h) to a stream of real
// spectrograms: cross-entropy on the classifier head plus a batch-hard cosine triplet loss on the
// embedding head (ops/triplet.h), AdamW, warm-up + cosine, gradient clipping; saves the judge
// folder every --save-every steps and at the end; with --val, measures it on the val split.
#include <getopt.h>
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "cli/cli.h"
#include "data/dataset.h"
#include "io/fileio.h"
#include "optim/adamw.h"
#include "optim/clip.h"
#include "optim/lr_schedule.h"
#include "ops/triplet.h"
#include "validator.h"

#define RUNNING_BETA 0.98  // running train loss / accuracy: exponential average over ~50 steps
#define MAX_UNUSABLE 100   // batches in a row of the wrong shape or with unknown labels: give up

static const char *USAGE =
    "usage: doppel-validator train --in EP --judge DIR [options]\n"
    "\n"
    "examples:\n"
    "  doppel-loader --data ../shared/data/gait10 --resolution 64 --shuffle --forever --augment &\n"
    "  doppel-loader --data ../shared/data/gait10 --resolution 64 --split val --out @tcp://127.0.0.1:5556 &\n"
    "  doppel-validator train --in '>tcp://127.0.0.1:5555' --val '>tcp://127.0.0.1:5556' --judge runs/judge\n"
    "  doppel-validator train --in '>tcp://127.0.0.1:5555' --judge runs/judge --steps 300 --block-out-channels 16,32\n"
    "\n"
    "Trains the judge on the stream's images and labels (users matched by the name table in the\n"
    "frames' meta): a small CNN (per block_out_channels entry: 3x3 conv, BatchNorm, ReLU, 2x2 average\n"
    "pool; then global average pool) with two heads: a user classifier (dropout, linear;\n"
    "cross-entropy) and a metric-learning embedding (linear to D, L2-normalised; batch-hard triplet\n"
    "loss on cosine distances, anchors without a positive in the batch skipped). The judge folder gets config.json +\n"
    "diffusion_pytorch_model.safetensors (every --save-every steps and at the end, atomically) and\n"
    "metrics.jsonl. With --val, the finished judge classifies that (finite) stream and the per-user\n"
    "accuracy goes to stdout and DIR/val.json.\n"
    "\n"
    "  --in EP                training images (bare: connect; '@' binds, '>' connects)\n"
    "  --judge DIR            the judge folder (created)\n"
    "  --val EP               a finite stream of the val split, classified after training\n"
    "  --steps N              optimizer steps, one stream batch each (1500)\n"
    "  --lr LR                peak learning rate (1e-3)\n"
    "  --warmup W             linear warm-up steps, then cosine decay (min(100, steps/10))\n"
    "  --weight-decay WD      AdamW weight decay (0.01)\n"
    "  --clip C               gradient norm clip (1.0; 0: off)\n"
    "  --block-out-channels L channels of the down blocks (32,64,128,128)\n"
    "  --block-type T         conv_bn (the CNN above) or resnet (judges before BatchNorm: conv_in,\n"
    "                         ResnetBlock2D + Downsample2D blocks, GroupNorm + SiLU) (conv_bn)\n"
    "  --dropout P            before the classifier, in training (0.3)\n"
    "  --embedding-dim D      size of the embedding head (64; 0: no embedding head)\n"
    "  --triplet-weight W     weight of the triplet loss next to the cross-entropy (1.0)\n"
    "  --margin M             triplet margin on cosine distances (0.3)\n"
    "  --augment              random circular shift along time per image (as doppel-loader --augment)\n"
    "  --save-every K         checkpoint every K steps (500)\n"
    "  --metrics FILE         JSONL metrics (DIR/metrics.jsonl)\n"
    "  --timeout S            give up after S s without a frame (0: wait forever; 0)\n"
    "  --seed S               init, dropout and augmentation (0)\n"
    "  --threads N            worker threads (all cores)\n"
    "  --device cpu|cuda|auto where the judge trains (auto: the GPU when there is one)\n"
    "  --help, --version\n"
    "The batch size is the stream's (doppel-loader --batch).\n"
    "exit status: 0 done, 1 runtime error (stream, folder, non-finite training), 2 usage\n";

typedef struct {
    const char *in, *val, *judge, *metrics, *device;
    JudgeBlockType block_type;
    int steps, warmup, save_every, augment, timeout_s, threads, n_blocks, boc[MAX_BLOCKS], gpu, emb_dim;
    double lr, wd, clip, dropout, triplet_weight, margin;
    uint64_t seed;
} Options;

static void parse_channels(const char *s, Options *o) {
    char *end;
    o->n_blocks = 0;
    for (const char *p = s;; p = end + 1) {
        long v = strtol(p, &end, 10);
        if (end == p || v < 1 || v > 4096 || o->n_blocks == MAX_BLOCKS || (*end && *end != ','))
            cli_usage_error(TOOL, "--block-out-channels expects 1 to %d positive integers separated by commas, got '%s'",
                            MAX_BLOCKS, s);
        o->boc[o->n_blocks++] = (int)v;
        if (!*end) break;
    }
}

static Options parse(int argc, char **argv) {
    Options o = {.device = "auto", .steps = 1500, .warmup = -1, .save_every = 500, .lr = 1e-3, .wd = 0.01, .clip = 1.0, .dropout = 0.3, .block_type = JUDGE_CONV_BN,
                 .emb_dim = JUDGE_EMBEDDING_DIM, .triplet_weight = 1.0, .margin = 0.3, .n_blocks = 4, .boc = {32, 64, 128, 128}};
    enum { O_IN = 256, O_VAL, O_JUDGE, O_STEPS, O_LR, O_WARMUP, O_WD, O_CLIP, O_BOC, O_DROPOUT, O_BTYPE, O_EMB, O_TRIPLET, O_MARGIN, O_AUGMENT, O_SAVE,
           O_METRICS, O_TIMEOUT, O_SEED, O_THREADS, O_DEVICE, O_HELP, O_VERSION };
    static const struct option opts[] = {
        {"in", 1, 0, O_IN}, {"val", 1, 0, O_VAL}, {"judge", 1, 0, O_JUDGE}, {"steps", 1, 0, O_STEPS},
        {"lr", 1, 0, O_LR}, {"warmup", 1, 0, O_WARMUP}, {"weight-decay", 1, 0, O_WD}, {"clip", 1, 0, O_CLIP},
        {"block-out-channels", 1, 0, O_BOC}, {"dropout", 1, 0, O_DROPOUT}, {"augment", 0, 0, O_AUGMENT},
        {"block-type", 1, 0, O_BTYPE}, {"embedding-dim", 1, 0, O_EMB}, {"triplet-weight", 1, 0, O_TRIPLET}, {"margin", 1, 0, O_MARGIN},
        {"save-every", 1, 0, O_SAVE}, {"metrics", 1, 0, O_METRICS}, {"timeout", 1, 0, O_TIMEOUT},
        {"seed", 1, 0, O_SEED}, {"threads", 1, 0, O_THREADS}, {"device", 1, 0, O_DEVICE}, {"help", 0, 0, O_HELP}, {"version", 0, 0, O_VERSION},
        {0, 0, 0, 0}};
    optind = 0;
    int c;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case O_IN: o.in = optarg; break;
        case O_VAL: o.val = optarg; break;
        case O_JUDGE: o.judge = optarg; break;
        case O_STEPS: o.steps = (int)cli_parse_long(TOOL, "--steps", optarg, 1, 100000000); break;
        case O_LR: o.lr = cli_parse_double(TOOL, "--lr", optarg, 0, 10); break;
        case O_WARMUP: o.warmup = (int)cli_parse_long(TOOL, "--warmup", optarg, 0, 100000000); break;
        case O_WD: o.wd = cli_parse_double(TOOL, "--weight-decay", optarg, 0, 10); break;
        case O_CLIP: o.clip = cli_parse_double(TOOL, "--clip", optarg, 0, 1e9); break;
        case O_BOC: parse_channels(optarg, &o); break;
        case O_DROPOUT: o.dropout = cli_parse_double(TOOL, "--dropout", optarg, 0, 0.99); break;
        case O_BTYPE:
            if (judge_block_type_parse(optarg, &o.block_type))
                cli_usage_error(TOOL, "--block-type is conv_bn or resnet, got '%s'", optarg);
            break;
        case O_EMB: o.emb_dim = (int)cli_parse_long(TOOL, "--embedding-dim", optarg, 0, JUDGE_EMBEDDING_MAX); break;
        case O_TRIPLET: o.triplet_weight = cli_parse_double(TOOL, "--triplet-weight", optarg, 0, 1000); break;
        case O_MARGIN: o.margin = cli_parse_double(TOOL, "--margin", optarg, 0, 2); break;
        case O_AUGMENT: o.augment = 1; break;
        case O_SAVE: o.save_every = (int)cli_parse_long(TOOL, "--save-every", optarg, 1, 100000000); break;
        case O_METRICS: o.metrics = optarg; break;
        case O_TIMEOUT: o.timeout_s = (int)cli_parse_long(TOOL, "--timeout", optarg, 0, 1 << 30); break;
        case O_SEED: o.seed = (uint64_t)cli_parse_long(TOOL, "--seed", optarg, 0, (long)(~0UL >> 1)); break;
        case O_THREADS: o.threads = (int)cli_parse_long(TOOL, "--threads", optarg, 1, 1024); break;
        case O_DEVICE: o.device = cli_parse_device(TOOL, optarg); break;
        case O_HELP: fputs(USAGE, stdout); exit(EXIT_OK);
        case O_VERSION: cli_print_version(TOOL); exit(EXIT_OK);
        default: cli_usage_error(TOOL, "unknown option for 'train'");
        }
    }
    if (optind < argc) cli_usage_error(TOOL, "unexpected argument '%s'", argv[optind]);
    if (!o.in) cli_usage_error(TOOL, "train needs --in EP (a stream of training images, e.g. from doppel-loader)");
    if (!o.judge) cli_usage_error(TOOL, "train needs --judge DIR (where the judge is saved)");
    if (o.warmup < 0) o.warmup = o.steps / 10 < 100 ? o.steps / 10 : 100;
    if (o.threads) omp_set_num_threads(o.threads);
    return o;
}

// the judge's configuration from the first batch: its image shape and the stream's user table
static int configure(JudgeConfig *c, const Options *o, const WireTensor *img, const json_t *users, char *err,
                     size_t errlen) {
    if (!json_is_array(users) || !json_array_size(users))
        return errf(err, errlen, "the stream's frames carry no meta 'users' table (user index -> name): the judge needs "
                    "the names (doppel-loader sends them)");
    if (img->shape[2] != img->shape[3])
        return errf(err, errlen, "images are %lldx%lld; the judge takes square images (doppel-loader --resolution R)",
                    (long long)img->shape[2], (long long)img->shape[3]);
    int K = (int)json_array_size(users);
    char **names = xcalloc((size_t)K, sizeof(char *));
    for (int u = 0; u < K; u++) names[u] = (char *)json_string_value(json_array_get(users, (size_t)u));
    judge_config_default(c, (int)img->shape[1], (int)img->shape[2], K, names);
    c->n_blocks = o->n_blocks;
    memcpy(c->block_out_channels, o->boc, sizeof(o->boc));
    c->norm_num_groups = judge_default_groups(c->block_out_channels, c->n_blocks);
    c->dropout = (float)o->dropout;
    c->embedding_dim = o->emb_dim;
    c->block_type = o->block_type;
    char e[256];
    if (judge_config_check(c, e, sizeof(e))) {
        free(names);
        c->users = NULL;
        return errf(err, errlen, "cannot build a judge for this stream: %s", e);
    }
    return 0;
}

static void save(JudgeNet *net, const char *dir, int64_t step, int *rc) {
    char err[1024];
    json_object_set_new(net->extra, "step", json_integer(step));
    if (judge_folder_save(net, dir, err, sizeof(err))) fprintf(stderr, MSG "checkpoint failed: %s\n", err), *rc = EXIT_RUNTIME;
}

// ---- after training: the val stream ----
static int validate(JudgeNet *net, const Options *o) {
    char err[1024], path[4096];
    ImageStream s;
    if (istream_open(&s, o->val, o->timeout_s, err, sizeof(err))) return fprintf(stderr, MSG "%s\n", err), EXIT_RUNTIME;
    fprintf(stderr, MSG "classifying the val stream %s\n", o->val);
    Tally t;
    tally_init(&t, net->cfg.n_users);
    int rc = EXIT_OK;
    if (classify_stream(net, &s, &t, NULL, 0, 64, o->gpu, err, sizeof(err))) fprintf(stderr, MSG "val: %s\n", err), rc = EXIT_RUNTIME;
    else if (!tally_total(&t)) fprintf(stderr, MSG "val: no images arrived on %s\n", o->val), rc = EXIT_RUNTIME;
    if (rc == EXIT_OK) {
        json_t *rep = tally_json(&t, net, o->judge, o->val);
        json_object_set_new(rep, "tool", json_string("doppel-validator train --val"));
        json_object_set_new(rep, "stopped_by", json_string(s.why));
        tally_print_md(stdout, rep);
        fflush(stdout);
        snprintf(path, sizeof(path), "%s/val.json", o->judge);
        if (report_write(rep, path, err, sizeof(err))) fprintf(stderr, MSG "%s\n", err), rc = EXIT_RUNTIME;
        else fprintf(stderr, MSG "val accuracy %.4f on %lld images -> %s\n", tally_accuracy(&t), (long long)tally_total(&t), path);
        json_decref(rep);
    }
    tally_free(&t);
    istream_close(&s);
    return rc;
}

// ---- training ----
typedef struct {
    JudgeNet net;
    AdamW opt;
    Compute cp;  // the judge on the chosen device
    Rng rng;
    int *truth;
    int32_t *labels;
    float *tmp;
} Trainer;

// the triplet loss of the embedding head, computed on the host: returns dloss/demb (N, D) in ctx
// memory (NULL without the head) and the loss in *loss
static float *triplet_grad(Trainer *tr, const Options *o, int N, float *loss, TripletStats *ts) {
    JudgeNet *net = &tr->net;
    Ctx *ctx = &tr->cp.ctx;
    int D = net->cfg.embedding_dim;
    *loss = 0;
    if (!D) return NULL;
    size_t n = (size_t)N * D;
    float *z = xmalloc(n * sizeof(float)), *dz = xcalloc(n, sizeof(float));  // (N, D) host
    ctx_get(ctx, z, net->emb, n * sizeof(float));
    *loss = triplet_cosine_loss(dz, z, tr->labels, N, D, (float)o->margin, (float)o->triplet_weight, ts);
    float *demb = arena_floats(ctx->arena, n);                                // (N, D) ctx memory
    ctx_put(ctx, demb, dz, n * sizeof(float));
    free(z), free(dz);
    return demb;
}

// one optimizer step on the batch; returns the cross-entropy (NaN when the step was skipped), the
// triplet loss and the accuracy
static float train_step(Trainer *tr, const Options *o, const WireTensor *img, int N, float lr, float *acc, float *norm,
                        float *triplet, TripletStats *ts) {
    JudgeNet *net = &tr->net;
    int K = net->cfg.n_users, C = (int)img->shape[1], R = (int)img->shape[2];
    Ctx *ctx = &tr->cp.ctx;
    ParamSet *ps = ctx->ps;
    arena_reset(&tr->cp.arena);
    size_t n_img = (size_t)N * C * R * R;
    float *xh = xmalloc(n_img * sizeof(float));                    // the batch on the host
    wire_tensor_f32(xh, img);
    if (o->augment)
        for (int n = 0; n < N; n++)
            augment_time_shift(xh + (size_t)n * C * R * R, C, R, R, (int)rng_below(&tr->rng, (uint32_t)R), tr->tmp);
    Tensor x = ctx_tensor(ctx, N, C, R, R);                        // [N, C, R, R]
    ctx_put(ctx, x.d, xh, n_img * sizeof(float));
    free(xh);
    for (int n = 0; n < N; n++) tr->labels[n] = tr->truth[n];
    const int32_t *labels = ctx_input(ctx, tr->labels, (size_t)N * sizeof(int32_t));
    compute_zero_grad(&tr->cp);
    float *logits = judge_forward(ctx, net, x);                    // (N, K)
    float *probs = arena_floats(ctx->arena, (size_t)N * K);        // (N, K)
    float loss = OP(ctx, cross_entropy_forward, probs, logits, labels, N, K);
    float *ph = xmalloc((size_t)N * K * sizeof(float));
    ctx_get(ctx, ph, probs, (size_t)N * K * sizeof(float));
    int correct = 0;
    for (int n = 0; n < N; n++) {
        const float *p = ph + (size_t)n * K;
        int best = 0;
        for (int k = 1; k < K; k++) best = p[k] > p[best] ? k : best;
        correct += best == tr->labels[n];
    }
    free(ph);
    *acc = (float)correct / N;
    float *dlogits = arena_zeros(ctx->arena, (size_t)N * K);       // (N, K)
    OP(ctx, cross_entropy_backward, dlogits, probs, labels, N, K, 1.0f);
    float *demb = triplet_grad(tr, o, N, triplet, ts);
    judge_backward(ctx, net, dlogits, demb);
    if (!isfinite(loss) || !isfinite(*triplet) || !OP(ctx, grads_finite, ps)) return NAN;
    *norm = o->clip > 0 ? OP(ctx, clip_grad_norm, ps, (float)o->clip) : OP(ctx, grad_global_norm, ps);
    OP(ctx, adamw_step, &tr->opt, ps, lr);
    return loss;
}

int validator_train_main(int argc, char **argv) {
    Options o = parse(argc, argv);
    char err[1024], path[4096];
    zsock_install_signals();
    ImageStream s;
    if (istream_open(&s, o.in, o.timeout_s, err, sizeof(err))) return fprintf(stderr, MSG "%s\n", err), EXIT_RUNTIME;
    fprintf(stderr, MSG "waiting for images on %s\n", o.in);
    const WireTensor *img, *lab;
    if (!istream_next(&s, &img, &lab)) {
        fprintf(stderr, MSG "the stream %s ended (%s) before any image arrived\n", o.in, s.why);
        istream_close(&s), zsock_term();
        return EXIT_RUNTIME;
    }
    Trainer tr;
    memset(&tr, 0, sizeof(tr));
    JudgeConfig cfg;
    if (configure(&cfg, &o, img, s.users, err, sizeof(err))) {
        fprintf(stderr, MSG "%s\n", err);
        istream_close(&s), zsock_term();
        return EXIT_RUNTIME;
    }
    JudgeNet *net = &tr.net;
    judge_build(net, &cfg);
    free(cfg.users);  // the names were borrowed from the stream's table
    rng_seed(&tr.rng, o.seed + 0x1d6e);
    judge_init(net, &tr.rng);
    int K = net->cfg.n_users, C = net->cfg.channels, R = net->cfg.resolution;
    net->extra = json_object();  // what the judge was trained on
    const json_t *m = s.meta;
    const char *keys[] = {"source", "split", "colormap", "augment"};
    for (int i = 0; i < 4; i++)
        if (m && json_object_get(m, keys[i])) json_object_set(net->extra, keys[i], json_object_get(m, keys[i]));
    json_object_set_new(net->extra, "trained_on", json_string(o.in));

    if (mkdir_p(o.judge, err, sizeof(err))) return fprintf(stderr, MSG "%s\n", err), EXIT_RUNTIME;
    if (!o.metrics) snprintf(path, sizeof(path), "%s/metrics.jsonl", o.judge);
    MetricsLog *ml = metrics_open(o.metrics ? o.metrics : path, err, sizeof(err));
    if (!ml) fprintf(stderr, MSG "no metrics log: %s\n", err);
    adamw_init(&tr.opt, &net->ps, (float)o.lr, 0.9f, 0.999f, 1e-8f, (float)o.wd);
    o.gpu = device_choose(o.device, "doppel-validator");
    if (o.gpu) fprintf(stderr, MSG "training on %s\n", cuda_device_name());
    compute_init(&tr.cp, &net->ps, &tr.rng, o.gpu);
    tr.cp.ctx.train = 1;
    tr.tmp = xmalloc((size_t)R * sizeof(float));
    int cap = 0, rc = EXIT_OK, fails = 0;
    double run_loss = 0, run_acc = 0, run_trip = 0, run_w = 0;
    fprintf(stderr, MSG "judge: %d users, %dx%dx%d images, %zu parameters, %d steps, batch %lld, embedding %d%s\n", K, C,
            R, R, params_count_floats(&net->ps), o.steps, (long long)img->shape[0], o.emb_dim,
            o.emb_dim ? "" : " (none)");
    Progress p;
    progress_start(&p, "train judge", o.steps, "step");
    for (int unusable = 0;; unusable++) {  // batches in a row that could not be used
        if (unusable >= MAX_UNUSABLE) {
            fprintf(stderr, MSG "%d batches in a row could not be used: stopping\n", MAX_UNUSABLE);
            rc = EXIT_RUNTIME;
            break;
        }
        int N = (int)img->shape[0];
        if (img->shape[1] != C || img->shape[2] != R || img->shape[3] != R) {
            fprintf(stderr, MSG "batch of %lldx%lldx%lld images skipped: the judge takes %dx%dx%d\n", (long long)img->shape[1],
                    (long long)img->shape[2], (long long)img->shape[3], C, R, R);
        } else {
            if (N > cap) {
                cap = N;
                tr.truth = xrealloc(tr.truth, (size_t)cap * sizeof(int));
                tr.labels = xrealloc(tr.labels, (size_t)cap * sizeof(int32_t));
            }
            if (map_labels(net, s.users, lab, N, tr.truth, err, sizeof(err))) {
                fprintf(stderr, MSG "batch skipped: %s\n", err);
            } else {
                float lr = lr_at(LR_COSINE_WARMUP, (float)o.lr, tr.opt.step, o.warmup, o.steps), acc = 0, norm = 0, trip = 0;
                TripletStats ts = {0};
                float loss = train_step(&tr, &o, img, N, lr, &acc, &norm, &trip, &ts);
                if (isnan(loss)) {
                    fprintf(stderr, MSG "step %lld: loss or gradients are not finite; step skipped\n",
                            (long long)tr.opt.step + 1);
                    if (++fails >= 5) {
                        fprintf(stderr, MSG "5 non-finite steps in a row: stopping (lower --lr?)\n");
                        rc = EXIT_RUNTIME;
                        break;
                    }
                } else {
                    fails = 0, unusable = -1;
                    run_loss = RUNNING_BETA * run_loss + (1 - RUNNING_BETA) * loss;
                    run_acc = RUNNING_BETA * run_acc + (1 - RUNNING_BETA) * acc;
                    run_trip = RUNNING_BETA * run_trip + (1 - RUNNING_BETA) * trip;
                    run_w = RUNNING_BETA * run_w + (1 - RUNNING_BETA);
                    if (ml) {
                        char line[384];
                        snprintf(line, sizeof(line), "{\"step\":%lld,\"loss\":%.6g,\"acc\":%.4g,\"triplet\":%.6g,"
                                 "\"triplet_active\":%.4g,\"pos_dist\":%.4g,\"neg_dist\":%.4g,\"lr\":%.6g,\"grad_norm\":%.6g}",
                                 (long long)tr.opt.step, loss, acc, trip, ts.anchors ? (double)ts.active / ts.anchors : 0.0,
                                 ts.pos_dist, ts.neg_dist, lr, norm);
                        metrics_write(ml, line);
                    }
                    char extra[96];
                    snprintf(extra, sizeof(extra), "loss %.4f acc %.1f%% triplet %.4f", run_loss / run_w, 100 * run_acc / run_w,
                             run_trip / run_w);
                    progress_update(&p, tr.opt.step, extra);
                    if (tr.opt.step % o.save_every == 0 && tr.opt.step < o.steps)
                        compute_params_to_host(&tr.cp), save(net, o.judge, tr.opt.step, &rc);
                }
            }
        }
        if (tr.opt.step >= o.steps || zsock_interrupted()) break;
        if (!istream_next(&s, &img, &lab)) {
            fprintf(stderr, MSG "the training stream stopped (%s) at step %lld of %d\n", s.why, (long long)tr.opt.step, o.steps);
            break;
        }
    }
    char extra[96];
    snprintf(extra, sizeof(extra), "loss %.4f acc %.1f%%", run_w ? run_loss / run_w : NAN, run_w ? 100 * run_acc / run_w : NAN);
    progress_finish(&p, extra);
    istream_close(&s);
    compute_params_to_host(&tr.cp);
    if (tr.opt.step > 0) {
        save(net, o.judge, tr.opt.step, &rc);
        fprintf(stderr, MSG "saved %s at step %lld (running train loss %.4f, accuracy %.3f)%s\n", o.judge,
                (long long)tr.opt.step, run_w ? run_loss / run_w : NAN, run_w ? run_acc / run_w : NAN,
                zsock_interrupted() ? " (interrupted)" : "");
    } else {
        fprintf(stderr, MSG "no training step was taken; nothing saved\n");
        rc = EXIT_RUNTIME;
    }
    metrics_close(&ml);
    if (rc == EXIT_OK && o.val && !zsock_interrupted()) rc = validate(net, &o);
    zsock_term();
    compute_free(&tr.cp);
    free(tr.truth), free(tr.labels), free(tr.tmp);
    judge_free(net);
    return rc;
}

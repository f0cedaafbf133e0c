// classify.c: `doppel-validator classify` — a judge's accuracy per user on a set of spectrograms,
// from a finite stream or a folder in the ID_<n>/ layout. Users are matched by name (the judge's
// users list vs the stream's meta "users" or the folder names), never by index.
#include <getopt.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "cli/cli.h"
#include "data/dataset.h"
#include "io/fileio.h"
#include "ops/triplet.h"
#include "validator.h"

#define BATCH_DEFAULT 64

static const char *USAGE =
    "usage: doppel-validator classify --judge DIR (--in EP | --data DIR) [options]\n"
    "\n"
    "examples:\n"
    "  doppel-validator classify --judge runs/judge --data ../shared/data/gait10 --report runs/judge/gait10.json\n"
    "  doppel-loader --data ../shared/data/gait10 --resolution 64 --split val --out @tcp://127.0.0.1:5556 &\n"
    "  doppel-validator classify --judge runs/judge --in '>tcp://127.0.0.1:5556'\n"
    "  doppel-validator classify --judge runs/judge --data runs/generated --report runs/generated/identity.json\n"
    "\n"
    "Classifies every image of the set with the judge and prints, per user: images, accuracy (top-1),\n"
    "mean softmax probability of the true user, and the user it is most often mistaken for; then the\n"
    "overall accuracy. Users are matched by name: the judge's users list against the stream's meta\n"
    "'users' table or the folder names; a user the judge does not know is an error.\n"
    "\n"
    "  --judge DIR       a judge folder from doppel-validator train\n"
    "  --in EP           a finite stream of labelled images (ends with its end frame)\n"
    "  --data DIR        a folder DIR/ID_<n>/*.{png,jpg,jpeg,bmp}, every image of it; jet- or\n"
    "                    viridis-coloured images are inverted to magnitude as doppel-loader does\n"
    "  --report FILE     also write the figures (and the confusion matrix) as JSON\n"
    "  --resolution R    image side (the judge's); --data images are resized to it\n"
    "  --batch B         images per judge pass (64)\n"
    "  --timeout S       --in: give up after S s without a frame (0: wait forever; 0)\n"
    "  --threads N       worker threads (all cores)\n"
    "  --device cpu|cuda|auto  where the judge runs (auto: the GPU when there is one)\n"
    "  --help, --version\n"
    "exit status: 0 done, 1 runtime error (bad judge folder or set, unknown user, no images), 2 usage\n";

typedef struct {
    const char *judge, *in, *data, *report, *device;
    int resolution, batch, timeout_s, threads, gpu;
} Options;

static Options parse(int argc, char **argv) {
    Options o = {.batch = BATCH_DEFAULT, .device = "auto"};
    enum { O_JUDGE = 256, O_IN, O_DATA, O_REPORT, O_RES, O_BATCH, O_TIMEOUT, O_THREADS, O_DEVICE, O_HELP, O_VERSION };
    static const struct option opts[] = {
        {"judge", 1, 0, O_JUDGE}, {"in", 1, 0, O_IN}, {"data", 1, 0, O_DATA}, {"report", 1, 0, O_REPORT},
        {"resolution", 1, 0, O_RES}, {"batch", 1, 0, O_BATCH}, {"timeout", 1, 0, O_TIMEOUT},
        {"threads", 1, 0, O_THREADS}, {"device", 1, 0, O_DEVICE}, {"help", 0, 0, O_HELP}, {"version", 0, 0, O_VERSION},
        {0, 0, 0, 0}};
    optind = 0;
    int c;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case O_JUDGE: o.judge = optarg; break;
        case O_IN: o.in = optarg; break;
        case O_DATA: o.data = optarg; break;
        case O_REPORT: o.report = optarg; break;
        case O_RES: o.resolution = (int)cli_parse_long(TOOL, "--resolution", optarg, 8, 4096); break;
        case O_BATCH: o.batch = (int)cli_parse_long(TOOL, "--batch", optarg, 1, 4096); break;
        case O_TIMEOUT: o.timeout_s = (int)cli_parse_long(TOOL, "--timeout", optarg, 0, 1 << 30); break;
        case O_THREADS: o.threads = (int)cli_parse_long(TOOL, "--threads", optarg, 1, 1024); break;
        case O_DEVICE: o.device = cli_parse_device(TOOL, optarg); break;
        case O_HELP: fputs(USAGE, stdout); exit(EXIT_OK);
        case O_VERSION: cli_print_version(TOOL); exit(EXIT_OK);
        default: cli_usage_error(TOOL, "unknown option for 'classify'");
        }
    }
    if (optind < argc) cli_usage_error(TOOL, "unexpected argument '%s'", argv[optind]);
    if (!o.judge) cli_usage_error(TOOL, "classify needs --judge DIR");
    if (!o.in == !o.data) cli_usage_error(TOOL, "classify needs exactly one of --in EP or --data DIR");
    if (o.threads) omp_set_num_threads(o.threads);
    o.gpu = device_choose(o.device, "doppel-validator");
    if (o.gpu) fprintf(stderr, "doppel-validator: classifying on %s\n", cuda_device_name());
    return o;
}

// "ID_1, ID_2, ... (31 users)" for error messages
static void list_users(const JudgeNet *net, char *buf, size_t n) {
    buf[0] = 0;
    int K = net->cfg.n_users, shown = K < 8 ? K : 8;
    for (int u = 0; u < shown; u++)
        snprintf(buf + strlen(buf), n - strlen(buf), "%s%s", u ? ", " : "", net->cfg.users[u]);
    if (shown < K) snprintf(buf + strlen(buf), n - strlen(buf), ", ... (%d users)", K);
}

static int unknown_user(const JudgeNet *net, const char *name, const char *where, char *err, size_t errlen) {
    char known[512];
    list_users(net, known, sizeof(known));
    return errf(err, errlen, "user '%s' (%s) is not one of the judge's users (%s): a judge only recognises the people "
                "it was trained on", name, where, known);
}

int map_labels(const JudgeNet *net, const json_t *users, const WireTensor *label, int N, int *truth, char *err,
               size_t errlen) {
    if (!label) return errf(err, errlen, "the batch has no 'label' tensor: each image's user must be known");
    if (!json_is_array(users))
        return errf(err, errlen, "the stream's frames carry no meta 'users' table (label -> user name): users are "
                    "matched by name");
    size_t U = json_array_size(users);
    for (int n = 0; n < N; n++) {
        int32_t l;
        memcpy(&l, (const char *)label->data + 4 * (size_t)n, 4);
        const char *name = l >= 0 && (size_t)l < U ? json_string_value(json_array_get(users, (size_t)l)) : NULL;
        if (!name) return errf(err, errlen, "label %d is outside the stream's users table (%zu users)", l, U);
        int k = judge_user_index(net, name);
        if (k < 0) {
            char where[64];
            snprintf(where, sizeof(where), "label %d of the stream", l);
            return unknown_user(net, name, where, err, errlen);
        }
        truth[n] = k;
    }
    return 0;
}

void judged_free(JudgedSet *s) {
    free(s->feat), free(s->prob), free(s->truth), free(s->img), free(s->emb);
    memset(s, 0, sizeof(*s));
}

// appends m images (host, (m, C, H, W)), the judge's features and embeddings from its last forward
// (ctx memory), probabilities from logits (host) and truths
static void judged_add(JudgedSet *s, Ctx *ctx, const JudgeNet *net, const float *x, int H, int W, const float *logits,
                       const int *truth, int m) {
    int C = net->cfg.channels, F = judge_feature_dim(net), K = net->cfg.n_users, D = net->cfg.embedding_dim;
    size_t per = (size_t)C * H * W;
    if (s->n + m > s->cap) {
        s->cap = 2 * (s->n + m);
        s->feat = xrealloc(s->feat, (size_t)s->cap * F * sizeof(float));
        if (D) s->emb = xrealloc(s->emb, (size_t)s->cap * D * sizeof(float));
        s->prob = xrealloc(s->prob, (size_t)s->cap * K * sizeof(float));
        s->truth = xrealloc(s->truth, (size_t)s->cap * sizeof(int));
        s->img = xrealloc(s->img, (size_t)s->cap * per * sizeof(float));
    }
    s->F = F, s->K = K, s->D = D, s->C = C, s->H = H, s->W = W;
    memcpy(s->img + (size_t)s->n * per, x, (size_t)m * per * sizeof(float));
    ctx_get(ctx, s->feat + (size_t)s->n * F, net->features, (size_t)m * F * sizeof(float));
    if (D) {
        float *e = s->emb + (size_t)s->n * D;
        ctx_get(ctx, e, net->emb, (size_t)m * D * sizeof(float));
        l2_normalize_rows(e, e, m, D);
    }
    for (int i = 0; i < m; i++) {  // softmax, as cross_entropy_forward
        const float *z = logits + (size_t)i * K;
        float *p = s->prob + (size_t)(s->n + i) * K, mx = z[0];
        for (int k = 1; k < K; k++) mx = z[k] > mx ? z[k] : mx;
        double sum = 0;
        for (int k = 0; k < K; k++) sum += p[k] = expf(z[k] - mx);
        for (int k = 0; k < K; k++) p[k] = (float)(p[k] / sum);
        s->truth[s->n + i] = truth[i];
    }
    s->n += m;
}

void classify_images(JudgeNet *net, Ctx *ctx, const float *x, const int *truth, int N, int H, int W, int batch, Tally *t,
                     JudgedSet *collect) {
    int C = net->cfg.channels;
    size_t per = (size_t)C * H * W;
    for (int k0 = 0; k0 < N; k0 += batch) {
        int m = N - k0 < batch ? N - k0 : batch;
        arena_reset(ctx->arena);
        Tensor xt = ctx_tensor(ctx, m, C, H, W);                       // [m, C, H, W]
        ctx_put(ctx, xt.d, x + k0 * per, m * per * sizeof(float));
        float *logits = judge_forward(ctx, net, xt);                   // (m, K), ctx memory
        float *lh = xmalloc((size_t)m * net->cfg.n_users * sizeof(float));
        ctx_get(ctx, lh, logits, (size_t)m * net->cfg.n_users * sizeof(float));
        tally_add(t, lh, truth + k0, m);
        if (collect) judged_add(collect, ctx, net, x + k0 * per, H, W, lh, truth + k0, m);
        free(lh);
    }
}

typedef struct {
    Compute cp;
    Rng rng;
} Eval;

static void eval_init(Eval *e, JudgeNet *net, int gpu) {
    rng_seed(&e->rng, 0);
    compute_init(&e->cp, &net->ps, &e->rng, gpu);
    e->cp.ctx.train = 0;
}

static void eval_free(Eval *e) { compute_free(&e->cp); }

static void progress_acc(Progress *p, const Tally *t) {
    char extra[64];
    snprintf(extra, sizeof(extra), "accuracy %.1f%%", 100 * tally_accuracy(t));
    progress_update(p, tally_total(t), extra);
}

int classify_stream(JudgeNet *net, ImageStream *s, Tally *t, JudgedSet *collect, int resolution, int batch, int gpu,
                    char *err, size_t errlen) {
    int C = net->cfg.channels, R = resolution ? resolution : net->cfg.resolution, rc = 0;
    Eval e;
    eval_init(&e, net, gpu);
    float *buf = NULL;
    int *truth = NULL;
    size_t cap = 0;
    const WireTensor *img, *lab;
    Progress p;
    progress_start(&p, "classify", 0, "img");
    while (istream_next(s, &img, &lab)) {
        const Frame *f = &s->r.frame;
        if (f->has_total) p.total = (int64_t)f->total;
        int N = (int)img->shape[0];
        if (img->shape[1] != C || img->shape[2] != R || img->shape[3] != R) {
            rc = errf(err, errlen, "stream images are %lldx%lldx%lld (C x H x W) but the judge takes %dx%dx%d: stream them "
                      "with doppel-loader --channels %d --resolution %d", (long long)img->shape[1], (long long)img->shape[2],
                      (long long)img->shape[3], C, R, R, C, R);
            break;
        }
        if (img->numel > cap) {
            cap = img->numel;
            buf = xrealloc(buf, cap * sizeof(float));
            truth = xrealloc(truth, ((size_t)N + 1) * sizeof(int));
        }
        char e2[768];
        if (map_labels(net, s->users, lab, N, truth, e2, sizeof(e2))) {
            rc = errf(err, errlen, "batch #%llu of %s: %s", (unsigned long long)f->seq, s->endpoint, e2);
            break;
        }
        wire_tensor_f32(buf, img);
        classify_images(net, &e.cp.ctx, buf, truth, N, R, R, batch, t, collect);
        progress_acc(&p, t);
    }
    progress_finish(&p, NULL);
    free(buf), free(truth);
    eval_free(&e);
    return rc;
}

int classify_folder(JudgeNet *net, const char *dir, Tally *t, JudgedSet *collect, int resolution, int batch, int gpu,
                    char *err, size_t errlen) {
    Dataset ds;
    char e[1024], why[256];
    if (dataset_scan(&ds, dir, e, sizeof(e))) return errf(err, errlen, "%s", e);
    int *map = xcalloc((size_t)ds.n_users, sizeof(int)), rc = 0;
    for (int u = 0; u < ds.n_users && !rc; u++) {
        map[u] = judge_user_index(net, ds.users[u]);
        if (map[u] < 0) {
            char where[64];
            snprintf(where, sizeof(where), "folder %s/", ds.users[u]);
            rc = unknown_user(net, ds.users[u], where, err, errlen);
        }
    }
    if (rc) {
        free(map);
        dataset_free(&ds);
        return rc;
    }
    int C = net->cfg.channels, R = resolution ? resolution : net->cfg.resolution;
    Colormap cmap;
    int guessed = dataset_guess_channels(&ds, &cmap, why, sizeof(why));
    if (guessed != C) {
        const char *cm = json_string_value(net->extra ? json_object_get(net->extra, "colormap") : NULL);
        Colormap jc;
        if (C == 1 && cm && !colormap_parse(cm, &jc) && jc != CMAP_GRAY) cmap = jc;
        fprintf(stderr, MSG "%s (%s), but the judge takes %d channel%s: preprocessing to %d%s\n", dir, why, C,
                C == 1 ? "" : "s", C, C == 1 ? " (colour map inverted as the judge's training data)" : "");
    }
    int *idx = NULL, n = dataset_select(&ds, SPLIT_ALL, &idx), B = batch, skipped = 0;
    size_t per = (size_t)C * R * R;
    float *x = xmalloc((size_t)B * per * sizeof(float));
    int *truth = xmalloc((size_t)B * sizeof(int));
    unsigned char *ok = xmalloc((size_t)B);
    Preprocess pp = {R, C, cmap};
    Eval ev;
    eval_init(&ev, net, gpu);
    fprintf(stderr, MSG "%d images of %d users in %s (%s), at %dx%dx%d\n", n, ds.n_users, dir, why, C, R, R);
    Progress p;
    progress_start(&p, "classify", n, "img");
    for (int k0 = 0; k0 < n && !zsock_interrupted(); k0 += B) {
        int m = n - k0 < B ? n - k0 : B, got = 0;
#pragma omp parallel for schedule(dynamic, 1)
        for (int i = 0; i < m; i++) {
            char pe[512];
            ok[i] = !preprocess_sample(&ds, idx[k0 + i], &pp, x + (size_t)i * per, pe, sizeof(pe));
            if (!ok[i]) fprintf(stderr, MSG "skipping %s\n", pe);
        }
        for (int i = 0; i < m; i++) {  // compact: drop images that failed to load
            if (!ok[i]) {
                skipped++;
                continue;
            }
            if (got != i) memmove(x + (size_t)got * per, x + (size_t)i * per, per * sizeof(float));
            truth[got++] = map[ds.samples[idx[k0 + i]].user];
        }
        classify_images(net, &ev.cp.ctx, x, truth, got, R, R, B, t, collect);
        progress_acc(&p, t);
    }
    progress_finish(&p, NULL);
    if (skipped) fprintf(stderr, MSG "%d images could not be read and were left out\n", skipped);
    eval_free(&ev);
    free(x), free(truth), free(ok), free(idx), free(map);
    dataset_free(&ds);
    return rc;
}

int validator_classify_main(int argc, char **argv) {
    Options o = parse(argc, argv);
    char err[1024];
    JudgeNet net;
    if (judge_folder_load(&net, o.judge, err, sizeof(err))) return fprintf(stderr, MSG "%s\n", err), EXIT_RUNTIME;
    zsock_install_signals();
    Tally t;
    tally_init(&t, net.cfg.n_users);
    int rc = EXIT_OK;
    const char *why = "end";
    if (o.data) {
        if (classify_folder(&net, o.data, &t, NULL, o.resolution, o.batch, o.gpu, err, sizeof(err)))
            fprintf(stderr, MSG "%s\n", err), rc = EXIT_RUNTIME;
    } else {
        ImageStream s;
        if (istream_open(&s, o.in, o.timeout_s, err, sizeof(err)) ||
            classify_stream(&net, &s, &t, NULL, o.resolution, o.batch, o.gpu, err, sizeof(err)))
            fprintf(stderr, MSG "%s\n", err), rc = EXIT_RUNTIME;
        why = s.why;
        istream_close(&s);
        zsock_term();
    }
    if (rc == EXIT_OK && !tally_total(&t)) fprintf(stderr, MSG "no images to classify in %s\n", o.data ? o.data : o.in), rc = EXIT_RUNTIME;
    if (rc == EXIT_OK) {
        json_t *rep = tally_json(&t, &net, o.judge, o.data ? o.data : o.in);
        json_object_set_new(rep, "tool", json_string("doppel-validator classify"));
        json_object_set_new(rep, "stopped_by", json_string(zsock_interrupted() ? "interrupt" : why));
        tally_print_md(stdout, rep);
        fflush(stdout);
        if (o.report && report_write(rep, o.report, err, sizeof(err))) fprintf(stderr, MSG "%s\n", err), rc = EXIT_RUNTIME;
        if (zsock_interrupted() || strcmp(why, "end"))
            fprintf(stderr, MSG "partial result: the set was not read to its end (%s)\n", zsock_interrupted() ? "interrupt" : why);
        json_decref(rep);
    }
    tally_free(&t);
    judge_free(&net);
    return rc;
}

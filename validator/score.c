// score.c: doppel-validator score: do generated spectrograms belong to the right person, and do they
// look like the real ones? The judge (a user classifier trained on real spectrograms) classifies
// the generated set (identity) and supplies the feature space the distribution figures are
// measured in (realism: FID, KID, precision/recall; inception score from its softmax). The same
// figures for a held-out real set (--real-val) against the real set are the calibration: what
// "as real as real data" reads as in this feature space. A report (JSON + Markdown) with pass/fail
// against thresholds; identical input gives an identical report.
#include <getopt.h>
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "check.h"
#include "cli/cli.h"
#include "data/dataset.h"
#include "optim/adamw.h"
#include "optim/clip.h"
#include "optim/lr_schedule.h"
#include "image/image.h"
#include "io/fileio.h"
#include "plot/plot.h"
#include "metrics/realism.h"
#include "metrics/spectro.h"
#include "models/diffusion.h"
#include "validator.h"

static const char *USAGE =
    "usage: doppel-validator score --judge DIR --real SRC --generated SRC [options]\n"
    "\n"
    "examples:\n"
    "  doppel-validator score --judge runs/judge --real data/train --real-val data/val --generated runs/generated \\\n"
    "      --report runs/score\n"
    "  doppel-validator score --judge runs/judge --real data/train --generated '>tcp://127.0.0.1:5557'\n"
    "\n"
    "  SRC                a folder in the ID_<n>/ layout, or a stream endpoint (a finite stream of labelled\n"
    "                     images, e.g. doppel-loader ... --out, or doppel-decoder --pub)\n"
    "  --judge DIR        the user classifier (doppel-validator train): identity and feature space\n"
    "  --real SRC         real spectrograms (the judge's training users), the reference distribution\n"
    "  --generated SRC    generated spectrograms of the same users\n"
    "  --generator EP     or: ask a running doppel-diffuser serve at EP (e.g. tcp://gpu-host:5560) for\n"
    "                     --per-user N (16) samples of every user it shares with the judge (--steps 20,\n"
    "                     --guidance 4, --sampler dpmpp2m, --gen-seed 0), decoded here with --vae DIR;\n"
    "                     a generator that stops answering pings is retried, then given up with a message\n"
    "  --real-val SRC     held-out real spectrograms: the real-vs-real calibration of every figure\n"
    "  --report DIR       writes DIR/score.json (every figure) and DIR/score.md\n"
    "  --k K              neighbours for precision/recall (3)\n"
    "  --min-accuracy A   identity: generated accuracy to pass (0.8, the seed project's; doppel aims at 0.9)\n"
    "  --max-fid F        realism: FID to pass (50, the seed project's, in Inception space; here the\n"
    "                     judge's features, so read it next to the calibration)\n"
    "  --max-fid-ratio R  realism: generated FID at most R x the real-val calibration FID (3)\n"
    "  --min-is S         inception score (judge softmax) to pass (2)\n"
    "  --min-auc A        verification: genuine-vs-impostor ROC AUC of generated images against each\n"
    "                     user's real prototype in the judge's embedding space, to pass (0.9)\n"
    "  --tstr-steps N     train on generated, test on real: a fresh judge of the same architecture\n"
    "                     trained N steps on the generated set and one on the real set, both\n"
    "                     tested on --real-val (0: off; needs --real-val)\n"
    "  --resolution R  --batch B (64)  --timeout S (streams; 0: wait forever)  --threads N\n"
    "  --device cpu|cuda|auto  where the judge runs   --help\n"
    "exit status: 0 scored (pass or fail is in the report), 1 runtime error, 2 usage\n";

typedef struct {
    const char *judge, *real, *gen, *val, *report, *device, *generator, *vae, *sampler;
    int per_user, steps;
    long gen_seed;
    double guidance;
    int k, resolution, batch, timeout_s, threads, gpu, tstr_steps;
    double min_acc, max_fid, max_ratio, min_is, min_auc;
} Options;

static Options parse(int argc, char **argv) {
    Options o = {.k = 3, .batch = 64, .device = "auto", .min_acc = 0.8, .max_fid = 50, .max_ratio = 3, .min_is = 2, .min_auc = 0.9,
                 .per_user = 16, .steps = 20, .guidance = SAMPLE_GUIDANCE_DEFAULT, .sampler = "dpmpp2m"};
    enum { O_JUDGE = 256, O_REAL, O_GEN, O_VAL, O_REPORT, O_K, O_RES, O_BATCH, O_TIMEOUT, O_THREADS, O_DEVICE, O_MINACC,
           O_MAXFID, O_RATIO, O_MINIS, O_TSTR, O_GENERATOR, O_VAE, O_PER, O_STEPS, O_G, O_SAMPLER, O_GSEED, O_MINAUC, O_HELP };
    static const struct option opts[] = {
        {"judge", 1, 0, O_JUDGE}, {"real", 1, 0, O_REAL}, {"generated", 1, 0, O_GEN}, {"real-val", 1, 0, O_VAL},
        {"report", 1, 0, O_REPORT}, {"k", 1, 0, O_K}, {"resolution", 1, 0, O_RES}, {"batch", 1, 0, O_BATCH},
        {"timeout", 1, 0, O_TIMEOUT}, {"threads", 1, 0, O_THREADS}, {"device", 1, 0, O_DEVICE},
        {"min-accuracy", 1, 0, O_MINACC}, {"max-fid", 1, 0, O_MAXFID}, {"max-fid-ratio", 1, 0, O_RATIO},
        {"min-is", 1, 0, O_MINIS}, {"tstr-steps", 1, 0, O_TSTR}, {"generator", 1, 0, O_GENERATOR}, {"vae", 1, 0, O_VAE},
        {"per-user", 1, 0, O_PER}, {"steps", 1, 0, O_STEPS}, {"guidance", 1, 0, O_G}, {"sampler", 1, 0, O_SAMPLER},
        {"gen-seed", 1, 0, O_GSEED}, {"min-auc", 1, 0, O_MINAUC}, {"help", 0, 0, O_HELP}, {0, 0, 0, 0}};
    optind = 0;
    int c;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case O_JUDGE: o.judge = optarg; break;
        case O_REAL: o.real = optarg; break;
        case O_GEN: o.gen = optarg; break;
        case O_VAL: o.val = optarg; break;
        case O_REPORT: o.report = optarg; break;
        case O_K: o.k = (int)cli_parse_long(TOOL, "--k", optarg, 1, 100); break;
        case O_RES: o.resolution = (int)cli_parse_long(TOOL, "--resolution", optarg, 8, 4096); break;
        case O_BATCH: o.batch = (int)cli_parse_long(TOOL, "--batch", optarg, 1, 4096); break;
        case O_TIMEOUT: o.timeout_s = (int)cli_parse_long(TOOL, "--timeout", optarg, 0, 1 << 30); break;
        case O_THREADS: o.threads = (int)cli_parse_long(TOOL, "--threads", optarg, 1, 1024); break;
        case O_DEVICE: o.device = cli_parse_device(TOOL, optarg); break;
        case O_MINACC: o.min_acc = cli_parse_double(TOOL, "--min-accuracy", optarg, 0, 1); break;
        case O_MAXFID: o.max_fid = cli_parse_double(TOOL, "--max-fid", optarg, 0, 1e12); break;
        case O_RATIO: o.max_ratio = cli_parse_double(TOOL, "--max-fid-ratio", optarg, 0, 1e12); break;
        case O_MINAUC: o.min_auc = cli_parse_double(TOOL, "--min-auc", optarg, 0, 1); break;
        case O_MINIS: o.min_is = cli_parse_double(TOOL, "--min-is", optarg, 0, 1e12); break;
        case O_GENERATOR: o.generator = optarg; break;
        case O_VAE: o.vae = optarg; break;
        case O_PER: o.per_user = (int)cli_parse_long(TOOL, "--per-user", optarg, 1, 100000); break;
        case O_STEPS: o.steps = (int)cli_parse_long(TOOL, "--steps", optarg, 1, 1000); break;
        case O_G: o.guidance = cli_parse_double(TOOL, "--guidance", optarg, 0, 1000); break;
        case O_SAMPLER: o.sampler = optarg; break;
        case O_GSEED: o.gen_seed = cli_parse_long(TOOL, "--gen-seed", optarg, 0, 1L << 50); break;
        case O_TSTR: o.tstr_steps = (int)cli_parse_long(TOOL, "--tstr-steps", optarg, 0, 10000000); break;
        case O_HELP: fputs(USAGE, stdout); exit(EXIT_OK);
        default: cli_usage_error(TOOL, "unknown option for 'score'");
        }
    }
    if (optind < argc) cli_usage_error(TOOL, "unexpected argument '%s'", argv[optind]);
    if (!o.judge || !o.real || !o.gen == !o.generator)
        cli_usage_error(TOOL, "score needs --judge DIR, --real SRC and one of --generated SRC or --generator EP");
    if (o.generator && !o.vae) cli_usage_error(TOOL, "--generator needs --vae DIR (the VAE that decodes its latents)");
    if (o.tstr_steps && !o.val) cli_usage_error(TOOL, "--tstr-steps needs --real-val SRC (the real data both are tested on)");
    if (o.threads) omp_set_num_threads(o.threads);
    o.gpu = device_choose(o.device, "doppel-validator");
    return o;
}

static int is_dir(const char *p) {
    struct stat st;
    return stat(p, &st) == 0 && S_ISDIR(st.st_mode);
}

// the judge over one set (folder or stream): its tally and its features
static int judge_set(JudgeNet *net, const Options *o, const char *src, Tally *t, JudgedSet *js, char *err,
                     size_t errlen) {
    tally_init(t, net->cfg.n_users);
    memset(js, 0, sizeof(*js));
    int rc;
    if (is_dir(src)) {
        rc = classify_folder(net, src, t, js, o->resolution, o->batch, o->gpu, err, errlen);
    } else {
        ImageStream s;
        rc = istream_open(&s, src, o->timeout_s, err, errlen);
        if (!rc) rc = classify_stream(net, &s, t, js, o->resolution, o->batch, o->gpu, err, errlen);
        if (!rc && strcmp(s.why, "end")) fprintf(stderr, MSG "%s stopped before its end (%s): scoring what arrived\n", src, s.why);
        istream_close(&s);
    }
    if (!rc && js->n < o->k + 1) rc = errf(err, errlen, "%s: %d images, too few to score (at least %d)", src, js->n, o->k + 1);
    return rc;
}

// fraction of images whose true user is among the judge's top 3, and whose P(true user) > 0.8
static void top3_and_pass(const JudgedSet *s, double *top3, double *pass) {
    int in3 = 0, ok = 0, K = s->K;
    for (int i = 0; i < s->n; i++) {
        const float *p = s->prob + (size_t)i * K;
        float pt = p[s->truth[i]];
        int above = 0;
        for (int k = 0; k < K; k++) above += p[k] > pt;
        in3 += above < 3, ok += pt > 0.8f;
    }
    *top3 = (double)in3 / s->n, *pass = (double)ok / s->n;
}

// realism of set `b` against the reference set `a` in the judge's feature space
static json_t *realism(const JudgedSet *a, const JudgedSet *b, int k, char *err, size_t errlen) {
    double f, kd, pr, rc;
    if (fid(a->feat, a->n, b->feat, b->n, a->F, &f, err, errlen) || kid(a->feat, a->n, b->feat, b->n, a->F, &kd, err, errlen) ||
        precision_recall(a->feat, a->n, b->feat, b->n, a->F, k, &pr, &rc, err, errlen))
        return NULL;
    return json_pack("{s:f, s:f, s:f, s:f, s:f, s:i}", "fid", f, "kid", kd, "precision", pr, "recall", rc, "inception_score",
                     inception_score(b->prob, b->n, b->K), "images", b->n);
}

static int cmp_int(const void *a, const void *b) { return *(const int *)a - *(const int *)b; }
static int cmp_dbl(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

// the indices of set s's images of user u (malloc'd), their count in *n
static int *of_user(const JudgedSet *s, int u, int *n) {
    int *idx = xmalloc((size_t)(s->n ? s->n : 1) * sizeof(int));
    *n = 0;
    for (int i = 0; i < s->n; i++)
        if (s->truth[i] == u) idx[(*n)++] = i;
    return idx;
}

// radar statistics of set b against the reference a, per user the two share (spectro.h): Doppler
// profile total variation, KS of the pixel values (channel 0, [0, 1] units), median gait cadence
// of each; and the means over users
static json_t *spectro_stats(const JudgedSet *a, const JudgedSet *b, const JudgeNet *net) {
    int H = a->H, W = a->W, C = a->C;
    size_t per = (size_t)C * H * W, plane = (size_t)H * W;
    json_t *users = json_array();
    double tv_sum = 0, ks_sum = 0, cad_sum = 0;
    int nu = 0, ncad = 0;
    double *pa = xmalloc(H * sizeof(double)), *pb = xmalloc(H * sizeof(double));
    for (int u = 0; u < net->cfg.n_users; u++) {
        int na, nb;
        int *ia = of_user(a, u, &na), *ib = of_user(b, u, &nb);
        if (na && nb) {
            float *xa = xmalloc((size_t)na * per * sizeof(float)), *xb = xmalloc((size_t)nb * per * sizeof(float));
            float *va = xmalloc((size_t)na * plane * sizeof(float)), *vb = xmalloc((size_t)nb * plane * sizeof(float));
            int *ca = xmalloc((size_t)na * sizeof(int)), *cb = xmalloc((size_t)nb * sizeof(int));
            for (int i = 0; i < na; i++) {
                memcpy(xa + i * per, a->img + (size_t)ia[i] * per, per * sizeof(float));
                for (size_t j = 0; j < plane; j++) va[i * plane + j] = 0.5f * (xa[i * per + j] + 1.0f);
                ca[i] = cadence(xa + i * per, H, W);
            }
            for (int i = 0; i < nb; i++) {
                memcpy(xb + i * per, b->img + (size_t)ib[i] * per, per * sizeof(float));
                for (size_t j = 0; j < plane; j++) vb[i * plane + j] = 0.5f * (xb[i * per + j] + 1.0f);
                cb[i] = cadence(xb + i * per, H, W);
            }
            doppler_profile(pa, xa, na, C, H, W);
            doppler_profile(pb, xb, nb, C, H, W);
            double tv = total_variation(pa, pb, H), ks = ks_statistic(va, (size_t)na * plane, vb, (size_t)nb * plane);
            qsort(ca, (size_t)na, sizeof(int), cmp_int);
            qsort(cb, (size_t)nb, sizeof(int), cmp_int);
            int med_a = ca[na / 2], med_b = cb[nb / 2];
            json_array_append_new(users, json_pack("{s:s, s:f, s:f, s:i, s:i}", "user", net->cfg.users[u],
                                                   "doppler_profile_tv", tv, "power_ks", ks, "cadence_real", med_a,
                                                   "cadence", med_b));
            tv_sum += tv, ks_sum += ks, nu++;
            if (med_a > 0 && med_b > 0) cad_sum += abs(med_a - med_b), ncad++;
            free(xa), free(xb), free(va), free(vb), free(ca), free(cb);
        }
        free(ia), free(ib);
    }
    free(pa), free(pb);
    return json_pack("{s:f, s:f, s:f, s:o}", "doppler_profile_tv", nu ? tv_sum / nu : NAN, "power_ks", nu ? ks_sum / nu : NAN,
                     "cadence_abs_diff", ncad ? cad_sum / ncad : NAN, "per_user", users);
}

static double feat_dist(const float *x, const float *y, int F) {
    double s = 0;
    for (int j = 0; j < F; j++) s += ((double)x[j] - y[j]) * ((double)x[j] - y[j]);
    return sqrt(s);
}

// distances between images i and j of a set: of their pooled features (Euclidean), of their
// embeddings (cosine distance; they are L2-normalised)
typedef double (*PairDist)(const JudgedSet *s, int i, int j);
static double feature_dist(const JudgedSet *s, int i, int j) {
    return feat_dist(s->feat + (size_t)i * s->F, s->feat + (size_t)j * s->F, s->F);
}
static double embedding_dist(const JudgedSet *s, int i, int j) {
    const float *a = s->emb + (size_t)i * s->D, *b = s->emb + (size_t)j * s->D;
    double dot = 0;
    for (int d = 0; d < s->D; d++) dot += (double)a[d] * b[d];
    return 1.0 - dot;
}

// mean pairwise distance within each user's images, averaged over users with 2+ images
static double within_user_spread(const JudgedSet *s, PairDist dist) {
    double total = 0;
    int users = 0;
    for (int u = 0; u < s->K; u++) {
        int n;
        int *idx = of_user(s, u, &n);
        if (n >= 2) {
            double sum = 0;
            for (int i = 0; i < n; i++)
                for (int j = i + 1; j < n; j++) sum += dist(s, idx[i], idx[j]);
            total += sum / (0.5 * n * (n - 1)), users++;
        }
        free(idx);
    }
    return users ? total / users : NAN;
}

// each image of q's distance to its nearest image of the reference r (n_q values, malloc'd)
static double *nearest(const JudgedSet *q, const JudgedSet *r) {
    double *d = xmalloc((size_t)q->n * sizeof(double));
    for (int i = 0; i < q->n; i++) {
        double best = INFINITY;
        for (int j = 0; j < r->n; j++) {
            double e = feat_dist(q->feat + (size_t)i * q->F, r->feat + (size_t)j * r->F, q->F);
            if (e < best) best = e;
        }
        d[i] = best;
    }
    return d;
}

// diversity (within-user spread, generated over real) and memorisation (nearest real image of
// each generated one, against the nearest real image of each held-out real one: a generated sample
// closer than the 5th percentile of those is "closer to a training image than held-out data gets")
static json_t *diversity(const JudgedSet *real, const JudgedSet *gen, const JudgedSet *val) {
    double sr = within_user_spread(real, feature_dist), sg = within_user_spread(gen, feature_dist);
    double *dg = nearest(gen, real);
    qsort(dg, (size_t)gen->n, sizeof(double), cmp_dbl);
    json_t *j = json_pack("{s:f, s:f, s:f, s:f}", "spread_real", sr, "spread_generated", sg, "spread_ratio", sg / sr,
                          "nearest_real_median", dg[gen->n / 2]);
    if (real->D) {  // the same in the embedding space (cosine distance)
        double er = within_user_spread(real, embedding_dist), eg = within_user_spread(gen, embedding_dist);
        json_object_set_new(j, "embedding_spread_real", json_real(er));
        json_object_set_new(j, "embedding_spread_generated", json_real(eg));
        json_object_set_new(j, "embedding_spread_ratio", json_real(eg / er));
    }
    if (val && val->n) {
        double *dv = nearest(val, real);
        qsort(dv, (size_t)val->n, sizeof(double), cmp_dbl);
        double p5 = dv[(int)(0.05 * (val->n - 1))];
        int close = 0;
        for (int i = 0; i < gen->n; i++) close += dg[i] < p5;
        json_object_set_new(j, "nearest_real_median_real_val", json_real(dv[val->n / 2]));
        json_object_set_new(j, "closer_than_real_val_p5", json_real((double)close / gen->n));
        free(dv);
    }
    free(dg);
    return j;
}

// A fresh judge of tmpl's architecture trained `steps` AdamW steps (batch 32, random circular time
// shifts, cosine schedule, lr 1e-3) on the images of train, then its accuracy on test. The same
// seed and recipe for every call, so train-on-generated and train-on-real differ only in the data.
static double train_and_test(const JudgeNet *tmpl, const JudgedSet *train, const JudgedSet *test, int steps, int gpu) {
    JudgeNet net;
    JudgeConfig cfg = tmpl->cfg;
    cfg.embedding_dim = 0;  // a classifier only: cross-entropy is the recipe for both sides
    judge_build(&net, &cfg);
    Rng rng;
    rng_seed(&rng, 1234);
    judge_init(&net, &rng);
    AdamW opt;
    adamw_init(&opt, &net.ps, 1e-3f, 0.9f, 0.999f, 1e-8f, 0.01f);
    Compute cp;
    compute_init(&cp, &net.ps, &rng, gpu);
    Ctx *ctx = &cp.ctx;
    int B = 32, C = train->C, H = train->H, W = train->W, K = net.cfg.n_users;
    size_t per = (size_t)C * H * W;
    float *x = xmalloc((size_t)B * per * sizeof(float)), *tmp = xmalloc((size_t)W * sizeof(float));
    int32_t lab[32];
    for (int step = 0; step < steps; step++) {
        for (int b = 0; b < B; b++) {
            int i = (int)rng_below(&rng, (uint32_t)train->n);
            memcpy(x + b * per, train->img + (size_t)i * per, per * sizeof(float));
            augment_time_shift(x + b * per, C, H, W, (int)rng_below(&rng, (uint32_t)W), tmp);
            lab[b] = train->truth[i];
        }
        arena_reset(&cp.arena);
        ctx->train = 1;
        compute_zero_grad(&cp);
        Tensor xt = ctx_tensor(ctx, B, C, H, W);
        ctx_put(ctx, xt.d, x, (size_t)B * per * sizeof(float));
        const int32_t *ld = ctx_input(ctx, lab, sizeof(lab));
        float *logits = judge_forward(ctx, &net, xt);
        float *probs = arena_floats(ctx->arena, (size_t)B * K), *dlogits = arena_zeros(ctx->arena, (size_t)B * K);
        float loss = OP(ctx, cross_entropy_forward, probs, logits, ld, B, K);
        OP(ctx, cross_entropy_backward, dlogits, probs, ld, B, K, 1.0f);
        judge_backward(ctx, &net, dlogits, NULL);
        if (!isfinite(loss) || !OP(ctx, grads_finite, ctx->ps)) continue;
        OP(ctx, clip_grad_norm, ctx->ps, 1.0f);
        OP(ctx, adamw_step, &opt, ctx->ps, lr_at(LR_COSINE_WARMUP, 1e-3f, opt.step, steps / 20, steps));
    }
    ctx->train = 0;
    int correct = 0;
    float *lh = xmalloc((size_t)B * K * sizeof(float));
    for (int i0 = 0; i0 < test->n; i0 += B) {
        int m = test->n - i0 < B ? test->n - i0 : B;
        arena_reset(&cp.arena);
        Tensor xt = ctx_tensor(ctx, m, C, H, W);
        ctx_put(ctx, xt.d, test->img + (size_t)i0 * per, (size_t)m * per * sizeof(float));
        ctx_get(ctx, lh, judge_forward(ctx, &net, xt), (size_t)m * K * sizeof(float));
        for (int i = 0; i < m; i++) {
            int best = 0;
            for (int k = 1; k < K; k++) best = lh[i * K + k] > lh[i * K + best] ? k : best;
            correct += best == test->truth[i0 + i];
        }
    }
    free(x), free(tmp), free(lh);
    compute_free(&cp);
    judge_free(&net);
    return (double)correct / test->n;
}

static json_t *identity(const Tally *t, const JudgedSet *s, const JudgeNet *net, const char *judge, const char *src) {
    json_t *j = tally_json(t, net, judge, src);
    double top3, pass;
    top3_and_pass(s, &top3, &pass);
    json_object_set_new(j, "top3_accuracy", json_real(top3));
    json_object_set_new(j, "pass_rate_p_gt_0.8", json_real(pass));
    return j;
}

static double num(const json_t *o, const char *k) { return json_number_value(json_object_get(o, k)); }

static void print_md(FILE *f, const json_t *rep) {
    const json_t *gi = json_object_get(rep, "identity"), *gr = json_object_get(rep, "realism");
    const json_t *vi = json_object_get(rep, "identity_real_val"), *vr = json_object_get(rep, "realism_real_val");
    fprintf(f, "## doppel-validator score\n\n");
    fprintf(f, "| figure | generated | real val (calibration) |\n|---|---:|---:|\n");
#define ROW(name, gobj, vobj, key, fmt)                                                                            \
    do {                                                                                                           \
        fprintf(f, "| %s | " fmt " | ", name, num(gobj, key));                                                     \
        if (vobj) fprintf(f, fmt " |\n", num(vobj, key));                                                          \
        else fprintf(f, "- |\n");                                                                                  \
    } while (0)
    ROW("user accuracy", gi, vi, "accuracy", "%.3f");
    ROW("top-3 accuracy", gi, vi, "top3_accuracy", "%.3f");
    ROW("mean P(true user)", gi, vi, "mean_p_true", "%.3f");
    ROW("P(true user) > 0.8", gi, vi, "pass_rate_p_gt_0.8", "%.3f");
    ROW("FID (judge features) vs real", gr, vr, "fid", "%.3f");
    ROW("KID vs real", gr, vr, "kid", "%.4f");
    ROW("precision", gr, vr, "precision", "%.3f");
    ROW("recall", gr, vr, "recall", "%.3f");
    ROW("inception score (judge softmax)", gr, vr, "inception_score", "%.3f");
    const json_t *gv = json_object_get(rep, "verification"), *vv = json_object_get(rep, "verification_real_val");
    if (gv) {
        ROW("verification ROC AUC (embedding vs user prototype)", gv, vv, "auc", "%.4f");
        ROW("verification EER", gv, vv, "eer", "%.4f");
        ROW("nearest-prototype accuracy (embedding)", gv, vv, "nearest_prototype_accuracy", "%.3f");
    }
    const json_t *gs = json_object_get(rep, "spectrogram"), *vs = json_object_get(rep, "spectrogram_real_val");
    ROW("Doppler profile TV vs real (mean over users)", gs, vs, "doppler_profile_tv", "%.4f");
    ROW("power histogram KS vs real", gs, vs, "power_ks", "%.4f");
    ROW("gait cadence difference vs real (time columns)", gs, vs, "cadence_abs_diff", "%.2f");
#undef ROW
    const json_t *dv = json_object_get(rep, "diversity");
    fprintf(f, "\nDiversity: within-user feature spread %.4g generated vs %.4g real (ratio %.3f). Memorisation: "
               "median distance to the nearest real image %.4g",
            num(dv, "spread_generated"), num(dv, "spread_real"), num(dv, "spread_ratio"), num(dv, "nearest_real_median"));
    if (json_object_get(dv, "nearest_real_median_real_val"))
        fprintf(f, " (held-out real: %.4g); %.1f%% of generated images are closer to a real one than 95%% of held-out "
                   "real images are", num(dv, "nearest_real_median_real_val"), 100 * num(dv, "closer_than_real_val_p5"));
    fprintf(f, ".");
    if (json_object_get(dv, "embedding_spread_real"))
        fprintf(f, " Within-user embedding spread (cosine distance) %.4g generated vs %.4g real (ratio %.3f).",
                num(dv, "embedding_spread_generated"), num(dv, "embedding_spread_real"), num(dv, "embedding_spread_ratio"));
    fprintf(f, "\n");
    const json_t *ts = json_object_get(rep, "tstr");
    if (ts)
        fprintf(f, "\nTrain on generated, test on real (%lld steps, the judge's architecture): %.3f accuracy on the real val "
                   "set, against %.3f trained on real (%.2f of it).\n",
                (long long)json_integer_value(json_object_get(ts, "steps")), num(ts, "train_generated_test_real"),
                num(ts, "train_real_test_real"), num(ts, "ratio"));
    fprintf(f, "\n| check | threshold | value | |\n|---|---:|---:|---|\n");
    const json_t *checks = json_object_get(rep, "checks");
    size_t i;
    json_t *c;
    json_array_foreach(checks, i, c) {
        fprintf(f, "| %s | %s %g | %.4g | %s |\n", json_string_value(json_object_get(c, "name")),
                json_string_value(json_object_get(c, "op")), num(c, "threshold"), num(c, "value"),
                json_is_true(json_object_get(c, "pass")) ? "pass" : "**fail**");
    }
    fprintf(f, "\n");
    tally_print_md(f, gi);
}

// ---- report pictures ----
// DIR/grid.png: a row per user (the first 12), 4 real then 4 generated spectrograms
static void write_grid(const char *dir, const JudgedSet *real, const JudgedSet *gen, int K, Colormap cmap) {
    enum { PER = 4, COLS = 2 * PER };
    int rows = K < 12 ? K : 12, C = real->C, H = real->H, W = real->W;
    size_t per = (size_t)C * H * W;
    float *tiles = xcalloc((size_t)rows * COLS * per, sizeof(float));
    int *present = xcalloc((size_t)rows * COLS, sizeof(int));
    for (int u = 0; u < rows; u++)
        for (int s = 0; s < 2; s++) {
            const JudgedSet *js = s ? gen : real;
            int got = 0;
            for (int i = 0; i < js->n && got < PER; i++)
                if (js->truth[i] == u) {
                    int t = u * COLS + s * PER + got++;
                    memcpy(tiles + (size_t)t * per, js->img + (size_t)i * per, per * sizeof(float));
                    present[t] = 1;
                }
        }
    Image im;
    char path[4096], err[256];
    snprintf(path, sizeof(path), "%s/grid.png", dir);
    if (image_grid(&im, tiles, present, rows, COLS, C, H, W, cmap, 64, 4) == 0) {
        if (image_write_png(path, &im, 8, NULL, err, sizeof(err))) fprintf(stderr, MSG "%s\n", err);
        image_free(&im);
    }
    free(tiles), free(present);
}

// DIR/confusion.png: the generated set's confusion matrix, rows normalised (true user down, predicted
// user across), viridis from 0 (dark) to 1 (yellow)
static void write_confusion(const char *dir, const Tally *t) {
    int K = t->K, f = K < 64 ? 512 / K : 8;
    float *m = xmalloc((size_t)K * K * sizeof(float));
    for (int i = 0; i < K; i++)
        for (int j = 0; j < K; j++)
            m[i * K + j] = t->count[i] ? 2.0f * (float)t->confusion[i * K + j] / (float)t->count[i] - 1.0f : -1.0f;
    Image im;
    char path[4096], err[256];
    snprintf(path, sizeof(path), "%s/confusion.png", dir);
    if (image_alloc(&im, 3, K * f, K * f) == 0) {
        image_draw_tile(&im, 0, 0, m, 1, K, K, f, CMAP_VIRIDIS);
        if (image_write_png(path, &im, 8, NULL, err, sizeof(err))) fprintf(stderr, MSG "%s\n", err);
        image_free(&im);
    }
    free(m);
}

// DIR/doppler_profile.png (mean power per Doppler bin, all users) and DIR/power_histogram.png
static void write_plots(const char *dir, const JudgedSet *real, const JudgedSet *gen) {
    int H = real->H, W = real->W, C = real->C;
    enum { BINS = 50 };
    double *pr = xmalloc(H * sizeof(double)), *pg = xmalloc(H * sizeof(double));
    doppler_profile(pr, real->img, real->n, C, H, W);
    doppler_profile(pg, gen->img, gen->n, C, H, W);
    float *xs = xmalloc(H * sizeof(float)), *yr = xmalloc(H * sizeof(float)), *yg = xmalloc(H * sizeof(float));
    for (int h = 0; h < H; h++) xs[h] = (float)h, yr[h] = (float)pr[h], yg[h] = (float)pg[h];
    const char *names[2] = {"real", "generated"};
    char path[4096], err[256];
    snprintf(path, sizeof(path), "%s/doppler_profile.png", dir);
    if (plot_lines(path, "mean Doppler profile", "Doppler bin", "share of power", 0, 2, names,
                   (const float *[]){xs, xs}, (const float *[]){yr, yg}, (int[]){H, H}, err, sizeof(err)))
        fprintf(stderr, MSG "%s\n", err);
    float hx[BINS], hr[BINS] = {0}, hg[BINS] = {0};
    for (int b = 0; b < BINS; b++) hx[b] = (b + 0.5f) / BINS;
    const JudgedSet *sets[2] = {real, gen};
    float *hist[2] = {hr, hg};
    for (int s = 0; s < 2; s++) {
        size_t n = 0;
        for (int i = 0; i < sets[s]->n; i++)
            for (size_t j = 0; j < (size_t)H * W; j++) {
                float u = 0.5f * (sets[s]->img[(size_t)i * C * H * W + j] + 1.0f);
                int b = (int)(u * BINS);
                hist[s][b < 0 ? 0 : b >= BINS ? BINS - 1 : b] += 1, n++;
            }
        for (int b = 0; b < BINS; b++) hist[s][b] /= (float)(n ? n : 1);
    }
    snprintf(path, sizeof(path), "%s/power_histogram.png", dir);
    if (plot_lines(path, "power histogram", "power (0..1)", "share of pixels", 1, 2, names, (const float *[]){hx, hx},
                   (const float *[]){hr, hg}, (int[]){BINS, BINS}, err, sizeof(err)))
        fprintf(stderr, MSG "%s\n", err);
    free(pr), free(pg), free(xs), free(yr), free(yg);
}

static void add_check(json_t *checks, const char *name, const char *op, double threshold, double value) {
    int pass = !strcmp(op, ">=") ? value >= threshold : value <= threshold;
    json_array_append_new(checks, json_pack("{s:s, s:s, s:f, s:f, s:b}", "name", name, "op", op, "threshold", threshold,
                                            "value", value, "pass", pass));
}

int validator_score_main(int argc, char **argv) {
    Options o = parse(argc, argv);
    char err[1024];
    JudgeNet net;
    if (judge_folder_load(&net, o.judge, err, sizeof(err))) return fprintf(stderr, MSG "%s\n", err), EXIT_RUNTIME;
    zsock_install_signals();
    Tally tr, tg, tv;
    JudgedSet real, gen, val;
    memset(&val, 0, sizeof(val));
    int rc = EXIT_OK, have_val = o.val != NULL;
    fprintf(stderr, MSG "real set %s\n", o.real);
    if (judge_set(&net, &o, o.real, &tr, &real, err, sizeof(err))) return fprintf(stderr, MSG "%s\n", err), EXIT_RUNTIME;
    if (o.generator) {
        fprintf(stderr, MSG "generated set: asking %s for %d samples per user\n", o.generator, o.per_user);
        RemoteRequest rq = {o.generator, o.vae, o.per_user, o.steps, o.timeout_s, o.gen_seed, o.guidance, o.sampler};
        tally_init(&tg, net.cfg.n_users);
        memset(&gen, 0, sizeof(gen));
        if (score_remote(&net, &rq, &tg, &gen, o.batch, o.gpu, err, sizeof(err))) return fprintf(stderr, MSG "%s\n", err), EXIT_RUNTIME;
        if (gen.n < o.k + 1) return fprintf(stderr, MSG "%d generated images, too few to score\n", gen.n), EXIT_RUNTIME;
    } else {
        fprintf(stderr, MSG "generated set %s\n", o.gen);
        if (judge_set(&net, &o, o.gen, &tg, &gen, err, sizeof(err))) return fprintf(stderr, MSG "%s\n", err), EXIT_RUNTIME;
    }
    if (have_val) {
        fprintf(stderr, MSG "real val set %s\n", o.val);
        if (judge_set(&net, &o, o.val, &tv, &val, err, sizeof(err))) return fprintf(stderr, MSG "%s\n", err), EXIT_RUNTIME;
    }
    json_t *rep = json_object(), *checks = json_array();
    json_object_set_new(rep, "tool", json_string("doppel-validator score"));
    json_object_set_new(rep, "judge", json_string(o.judge));
    json_object_set_new(rep, "real", json_string(o.real));
    json_object_set_new(rep, "generated", json_string(o.gen ? o.gen : o.generator));
    json_object_set_new(rep, "real_val", o.val ? json_string(o.val) : json_null());
    json_object_set_new(rep, "feature_dim", json_integer(real.F));
    json_object_set_new(rep, "k", json_integer(o.k));
    json_object_set_new(rep, "identity", identity(&tg, &gen, &net, o.judge, o.gen ? o.gen : o.generator));
    json_t *gr = realism(&real, &gen, o.k, err, sizeof(err)), *vr = NULL;
    if (!gr) fprintf(stderr, MSG "%s\n", err), rc = EXIT_RUNTIME;
    else json_object_set_new(rep, "realism", gr);
    json_object_set_new(rep, "spectrogram", spectro_stats(&real, &gen, &net));
    json_t *gv = verification(&real, &gen);
    if (gv) json_object_set_new(rep, "verification", gv);
    else fprintf(stderr, MSG "the judge has no embedding head (trained before it existed): no verification figures\n");
    if (o.tstr_steps && have_val) {
        fprintf(stderr, MSG "TSTR: training a fresh judge on the generated set, and one on the real set (%d steps each)\n",
                o.tstr_steps);
        double tstr = train_and_test(&net, &gen, &val, o.tstr_steps, o.gpu), trtr = train_and_test(&net, &real, &val, o.tstr_steps, o.gpu);
        json_object_set_new(rep, "tstr", json_pack("{s:i, s:f, s:f, s:f}", "steps", o.tstr_steps, "train_generated_test_real",
                                                   tstr, "train_real_test_real", trtr, "ratio", trtr > 0 ? tstr / trtr : NAN));
    }
    json_object_set_new(rep, "diversity", diversity(&real, &gen, have_val ? &val : NULL));
    if (have_val) {
        json_object_set_new(rep, "spectrogram_real_val", spectro_stats(&real, &val, &net));
        json_object_set_new(rep, "identity_real_val", identity(&tv, &val, &net, o.judge, o.val));
        json_t *vv = verification(&real, &val);
        if (vv) json_object_set_new(rep, "verification_real_val", vv);
        vr = realism(&real, &val, o.k, err, sizeof(err));
        if (!vr) fprintf(stderr, MSG "%s\n", err), rc = EXIT_RUNTIME;
        else json_object_set_new(rep, "realism_real_val", vr);
    }
    if (rc == EXIT_OK) {
        const json_t *gi = json_object_get(rep, "identity");
        add_check(checks, "generated user accuracy", ">=", o.min_acc, num(gi, "accuracy"));
        add_check(checks, "FID (judge features)", "<=", o.max_fid, num(gr, "fid"));
        add_check(checks, "inception score", ">=", o.min_is, num(gr, "inception_score"));
        if (gv) add_check(checks, "verification ROC AUC", ">=", o.min_auc, num(gv, "auc"));
        if (vr) add_check(checks, "FID / real-val FID", "<=", o.max_ratio, num(gr, "fid") / fmax(num(vr, "fid"), 1e-12));
        int all = 1;
        size_t i;
        json_t *c;
        json_array_foreach(checks, i, c) all &= json_is_true(json_object_get(c, "pass"));
        json_object_set_new(rep, "checks", checks);
        json_object_set_new(rep, "pass", json_boolean(all));
        print_md(stdout, rep);
        fflush(stdout);
        if (o.report) {
            char path[4096];
            snprintf(path, sizeof(path), "%s/score.json", o.report);
            if (mkdir_p(o.report, err, sizeof(err)) || report_write(rep, path, err, sizeof(err))) {
                fprintf(stderr, MSG "%s\n", err), rc = EXIT_RUNTIME;
            } else {
                snprintf(path, sizeof(path), "%s/score.md", o.report);
                FILE *f = fopen(path, "w");
                if (f) print_md(f, rep), fclose(f);
                else fprintf(stderr, MSG "cannot write %s\n", path), rc = EXIT_RUNTIME;
                const char *cm = json_string_value(net.extra ? json_object_get(net.extra, "colormap") : NULL);
                Colormap cmap = CMAP_JET;
                if (cm) colormap_parse(cm, &cmap);
                write_grid(o.report, &real, &gen, net.cfg.n_users, cmap);
                write_confusion(o.report, &tg);
                write_plots(o.report, &real, &gen);
                fprintf(stderr, MSG "report in %s: score.md, score.json, grid.png (real | generated per user), "
                        "confusion.png, doppler_profile.png, power_histogram.png\n", o.report);
            }
        }
    } else {
        json_decref(checks);
    }
    json_decref(rep);
    tally_free(&tr), tally_free(&tg);
    judged_free(&real), judged_free(&gen);
    if (have_val) tally_free(&tv), judged_free(&val);
    judge_free(&net);
    zsock_term();
    return rc;
}

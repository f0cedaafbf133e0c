// check.c: `doppel-encoder check` — how well a VAE reconstructs the images of a stream.
// Each image x is encoded, its posterior mean z = mu (the first latent_channels of the moments,
// no sampling) decoded to x^ and clamped to [-1, 1] (as diffusers' image processor does before
// showing an image), and scored against x: PSNR (data range 2), SSIM (common/metrics/quality.h),
// L1 = mean |x - x^| in [-1, 1] units (half of it in [0, 1] units). Scores are aggregated per user
// (the stream's meta "users" table) and overall; latent statistics are taken per channel, unscaled
// and times the VAE's scaling_factor. The report folder gets report.json (every figure),
// report.md (tables + the grid) and grid.png (originals next to reconstructions).
#include <getopt.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

#include "check.h"
#include "cli/cli.h"
#include "image/image.h"
#include "io/fileio.h"
#include "metrics/quality.h"
#include "models/vae_folder.h"
#include "net/zsock.h"
#include "wire/frame.h"

#define TOOL "encoder check"  // cli_usage_error prints "doppel-encoder check: ..."
#define MSG "doppel-encoder check: "
#define DATA_RANGE 2.0        // images in [-1, 1]
#define GRID_MIN_TILE 96      // grid tiles are scaled up (nearest) to at least this many pixels
#define GRID_PAIR_SEP 2       // pixels between an original and its reconstruction
#define GRID_GAP 8            // pixels between pairs and between rows
#define MAX_LABEL (1 << 20)   // labels beyond this are treated as a bad frame

int encoder_check_main(int argc, char **argv);

static const char *USAGE =
    "usage: doppel-encoder check --vae DIR --in EP --report DIR [options]\n"
    "\n"
    "examples:\n"
    "  doppel-loader --data ../shared/data/gait10 --resolution 64 --split val --out @tcp://127.0.0.1:5555 &\n"
    "  doppel-encoder check --vae runs/vae --in '>tcp://127.0.0.1:5555' --report runs/vae/check\n"
    "  doppel-loader --synthetic --users 31 --per-user 20 --split all --out @tcp://127.0.0.1:5555 &\n"
    "  doppel-encoder check --vae runs/vae --in '>tcp://127.0.0.1:5555' --report out/check --max 200 --grid-users 8\n"
    "\n"
    "Encodes every image of the stream to its posterior mean, decodes it, and scores the\n"
    "reconstruction (clamped to [-1, 1]) per user and overall: PSNR (dB, data range 2), SSIM\n"
    "(11x11 Gaussian window, sigma 1.5), L1 = mean |x - x^| in [-1, 1] units. Writes\n"
    "DIR/report.json, DIR/report.md and DIR/grid.png (original | reconstruction pairs).\n"
    "\n"
    "  --vae DIR          diffusers AutoencoderKL folder (config.json + safetensors)\n"
    "  --in EP            image stream, e.g. from doppel-loader (bare: connect; '@' binds, '>' connects)\n"
    "  --report DIR       where the report goes (created)\n"
    "  --max N            stop after N images (0: until the end of the stream; 0)\n"
    "  --grid-users K     users shown in grid.png, lowest indices first (6)\n"
    "  --grid-samples M   samples per user in grid.png (4)\n"
    "  --batch B          images per VAE forward pass (16)\n"
    "  --timeout S        give up after S s without a frame (0: wait forever; 0)\n"
    "  --threads N        worker threads (all cores)\n"
    "  --device cpu|cuda|auto  where the VAE runs (auto: the GPU when there is one)\n"
    "  --help, --version\n"
    "exit status: 0 done, 1 runtime error (bad VAE folder, images of the wrong shape, timeout), 2 usage\n";

typedef struct {
    const char *vae, *in, *report, *device;
    long max;
    int grid_users, grid_samples, batch, timeout_s, threads;
} Options;

static Options parse_args(int argc, char **argv) {
    Options o = {.grid_users = 6, .grid_samples = 4, .batch = 16, .device = "auto"};
    enum { O_VAE = 256, O_IN, O_REPORT, O_MAX, O_GU, O_GS, O_BATCH, O_TIMEOUT, O_THREADS, O_DEVICE, O_HELP, O_VERSION };
    static const struct option opts[] = {
        {"vae", 1, 0, O_VAE}, {"in", 1, 0, O_IN}, {"report", 1, 0, O_REPORT}, {"max", 1, 0, O_MAX},
        {"grid-users", 1, 0, O_GU}, {"grid-samples", 1, 0, O_GS}, {"batch", 1, 0, O_BATCH},
        {"timeout", 1, 0, O_TIMEOUT}, {"threads", 1, 0, O_THREADS}, {"device", 1, 0, O_DEVICE}, {"help", 0, 0, O_HELP},
        {"version", 0, 0, O_VERSION}, {0, 0, 0, 0}};
    optind = 0;  // glibc: a full rescan, whatever the dispatching main did with getopt
    int c;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case O_VAE: o.vae = optarg; break;
        case O_IN: o.in = optarg; break;
        case O_REPORT: o.report = optarg; break;
        case O_MAX: o.max = cli_parse_long(TOOL, "--max", optarg, 0, 1L << 40); break;
        case O_GU: o.grid_users = (int)cli_parse_long(TOOL, "--grid-users", optarg, 0, 1000); break;
        case O_GS: o.grid_samples = (int)cli_parse_long(TOOL, "--grid-samples", optarg, 1, 100); break;
        case O_BATCH: o.batch = (int)cli_parse_long(TOOL, "--batch", optarg, 1, 4096); break;
        case O_TIMEOUT: o.timeout_s = (int)cli_parse_long(TOOL, "--timeout", optarg, 0, 1 << 30); break;
        case O_THREADS: o.threads = (int)cli_parse_long(TOOL, "--threads", optarg, 1, 1024); break;
        case O_DEVICE: o.device = cli_parse_device(TOOL, optarg); break;
        case O_HELP: fputs(USAGE, stdout); exit(EXIT_OK);
        case O_VERSION: cli_print_version("encoder"); exit(EXIT_OK);
        default: cli_usage_error(TOOL, "unknown option");
        }
    }
    if (optind < argc) cli_usage_error(TOOL, "unexpected argument '%s'", argv[optind]);
    if (!o.vae) cli_usage_error(TOOL, "--vae DIR is required");
    if (!o.in) cli_usage_error(TOOL, "--in EP is required");
    if (!o.report) cli_usage_error(TOOL, "--report DIR is required");
    return o;
}

// ---- running statistics (Chan et al.'s pairwise combination, in double) ----
typedef struct {
    double n, mean, m2, min, max;
} RunStats;

static void stats_merge(RunStats *a, const RunStats *b) {
    if (b->n == 0) return;
    if (a->n == 0) {
        *a = *b;
        return;
    }
    double n = a->n + b->n, delta = b->mean - a->mean;
    a->mean += delta * b->n / n;
    a->m2 += b->m2 + delta * delta * a->n * b->n / n;
    a->n = n;
    if (b->min < a->min) a->min = b->min;
    if (b->max > a->max) a->max = b->max;
}

// x[k * stride + i] for k < count, i < len: the values of one channel across a batch
static RunStats stats_of(const float *x, int count, size_t stride, size_t len) {
    RunStats s = {0, 0, 0, INFINITY, -INFINITY};
    double sum = 0;
    for (int k = 0; k < count; k++)
        for (size_t i = 0; i < len; i++) {
            double v = x[k * stride + i];
            sum += v;
            if (v < s.min) s.min = v;
            if (v > s.max) s.max = v;
        }
    s.n = (double)count * len;
    if (s.n == 0) return s;
    s.mean = sum / s.n;
    for (int k = 0; k < count; k++)
        for (size_t i = 0; i < len; i++) {
            double d = x[k * stride + i] - s.mean;
            s.m2 += d * d;
        }
    return s;
}

static double stats_std(const RunStats *s) { return s->n > 0 ? sqrt(s->m2 / s->n) : NAN; }

// ---- the state of one check ----
// Samples are grouped in buckets: bucket b = label + 1; bucket 0 holds samples without a label.
typedef struct {
    AutoencoderKL *model;
    int C, H, W, L, h, w;  // image (C, H, W), latent (L, h, w)
    int batch, grid_users, grid_samples;
    Compute cp;                   // the VAE on the chosen device
    Rng rng;
    float *momh, *yh;             // (batch, 2L, h, w) moments and (batch, C, H, W) reconstructions, host
    // per sample
    int n, cap;
    int *bucket;
    int64_t *seed;                // -1 without a seed tensor
    double *psnr, *ssim, *l1;
    // latents
    RunStats *lat;                // (L) posterior means per channel
    RunStats lat_all;
    double post_std_sum, kl_sum;  // sums of exp(logvar / 2) over latent values, of KL per sample
    // grid: the first grid_samples of each of the lowest grid_users buckets that have samples
    int n_buckets;
    float **gorig, **grecon;      // (n_buckets) -> (grid_samples, C, H, W) or NULL
    int *gcount, *bcount;         // (n_buckets) grid samples kept, samples seen
} Check;

static void check_init(Check *ck, AutoencoderKL *m, int batch, int grid_users, int grid_samples, int gpu) {
    memset(ck, 0, sizeof(*ck));
    ck->model = m;
    const VaeConfig *c = &m->cfg;
    int f = vae_downscale(c);
    ck->C = c->in_channels, ck->H = ck->W = c->sample_size;
    ck->L = c->latent_channels, ck->h = ck->w = c->sample_size / f;
    ck->batch = batch, ck->grid_users = grid_users, ck->grid_samples = grid_samples;
    rng_seed(&ck->rng, 0);
    compute_init(&ck->cp, &m->ps, &ck->rng, gpu);
    ck->momh = xmalloc((size_t)batch * 2 * ck->L * ck->h * ck->w * sizeof(float));
    ck->yh = xmalloc((size_t)batch * ck->C * ck->H * ck->W * sizeof(float));
    ck->lat = xcalloc((size_t)ck->L, sizeof(RunStats));
}

static void check_free(Check *ck) {
    compute_free(&ck->cp);
    free(ck->momh), free(ck->yh);
    free(ck->bucket), free(ck->seed), free(ck->psnr), free(ck->ssim), free(ck->l1), free(ck->lat);
    for (int b = 0; b < ck->n_buckets; b++) free(ck->gorig[b]), free(ck->grecon[b]);
    free(ck->gorig), free(ck->grecon), free(ck->gcount), free(ck->bcount);
    memset(ck, 0, sizeof(*ck));
}

static void ensure_bucket(Check *ck, int b) {
    if (b < ck->n_buckets) return;
    int nb = b + 1;
    ck->gorig = xrealloc(ck->gorig, (size_t)nb * sizeof(float *));
    ck->grecon = xrealloc(ck->grecon, (size_t)nb * sizeof(float *));
    ck->gcount = xrealloc(ck->gcount, (size_t)nb * sizeof(int));
    ck->bcount = xrealloc(ck->bcount, (size_t)nb * sizeof(int));
    for (int i = ck->n_buckets; i < nb; i++) ck->gorig[i] = ck->grecon[i] = NULL, ck->gcount[i] = ck->bcount[i] = 0;
    ck->n_buckets = nb;
}

// keeps a grid sample of bucket b if b is among the lowest grid_users buckets seen so far
static void grid_keep(Check *ck, int b, const float *x, const float *y) {
    size_t per = (size_t)ck->C * ck->H * ck->W;
    if (!ck->gorig[b]) {
        int lower = 0;
        for (int i = 0; i < b; i++) lower += ck->gorig[i] != NULL;
        if (lower >= ck->grid_users) return;
        ck->gorig[b] = xmalloc(ck->grid_samples * per * sizeof(float));
        ck->grecon[b] = xmalloc(ck->grid_samples * per * sizeof(float));
        for (int i = b + 1, kept = lower + 1; i < ck->n_buckets; i++) {  // a lower bucket displaces the highest
            if (!ck->gorig[i] || ++kept <= ck->grid_users) continue;
            free(ck->gorig[i]), free(ck->grecon[i]);
            ck->gorig[i] = ck->grecon[i] = NULL, ck->gcount[i] = 0;
        }
    }
    if (ck->gcount[b] >= ck->grid_samples) return;
    memcpy(ck->gorig[b] + ck->gcount[b] * per, x, per * sizeof(float));
    memcpy(ck->grecon[b] + ck->gcount[b] * per, y, per * sizeof(float));
    ck->gcount[b]++;
}

// one VAE pass over N <= batch images x (N, C, H, W) in [-1, 1]
static void check_chunk(Check *ck, const float *x, const int *bucket, const int64_t *seed, int N) {
    int C = ck->C, H = ck->H, W = ck->W, L = ck->L;
    size_t per = (size_t)C * H * W, hw = (size_t)ck->h * ck->w;
    Ctx *ctx = &ck->cp.ctx;
    arena_reset(&ck->cp.arena);
    Tensor xt = ctx_tensor(ctx, N, C, H, W);
    ctx_put(ctx, xt.d, x, N * per * sizeof(float));
    Tensor mom = vae_encode(ctx, ck->model, xt);         // [N, 2L, h, w] = [mean; logvar]
    float *momh = ck->momh, *yh = ck->yh;
    ctx_get(ctx, momh, mom.d, (size_t)N * 2 * L * hw * sizeof(float));
    Tensor z = ctx_tensor(ctx, N, L, mom.H, mom.W);      // [N, L, h, w] posterior mean
    for (int k = 0; k < N; k++) OP(ctx, copy_floats, z.d + k * L * hw, mom.d + k * 2 * L * hw, L * hw);
    Tensor y = vae_decode(ctx, ck->model, z);             // [N, C, H, W]
    CHECK(y.C == C && y.H == H && y.W == W, "decoder output (%d, %d, %d) != input (%d, %d, %d)", y.C, y.H, y.W, C, H, W);
    ctx_get(ctx, yh, y.d, N * per * sizeof(float));
    for (size_t i = 0; i < N * per; i++) yh[i] = yh[i] < -1 ? -1 : yh[i] > 1 ? 1 : yh[i];

    float *kl = xmalloc((size_t)N * sizeof(float));
    kl_forward(kl, momh, N, L, (int)hw);
    for (int c = 0; c < L; c++) {
        RunStats s = stats_of(momh + c * hw, N, 2 * L * hw, hw);
        stats_merge(&ck->lat[c], &s);
        stats_merge(&ck->lat_all, &s);
    }
    for (int k = 0; k < N; k++) {
        ck->kl_sum += kl[k];
        const float *lv = momh + (2 * (size_t)k + 1) * L * hw;
        for (size_t i = 0; i < L * hw; i++) ck->post_std_sum += exp(0.5 * fmin(fmax(lv[i], -30.0), 20.0));
    }

    if (ck->n + N > ck->cap) {
        ck->cap = 2 * (ck->n + N);
        ck->bucket = xrealloc(ck->bucket, ck->cap * sizeof(int));
        ck->seed = xrealloc(ck->seed, ck->cap * sizeof(int64_t));
        ck->psnr = xrealloc(ck->psnr, ck->cap * sizeof(double));
        ck->ssim = xrealloc(ck->ssim, ck->cap * sizeof(double));
        ck->l1 = xrealloc(ck->l1, ck->cap * sizeof(double));
    }
#pragma omp parallel for schedule(dynamic, 1)
    for (int k = 0; k < N; k++) {
        const float *a = x + k * per, *b = yh + k * per;
        ck->psnr[ck->n + k] = psnr(a, b, per, DATA_RANGE);
        ck->ssim[ck->n + k] = ssim(a, b, C, H, W, DATA_RANGE);
        ck->l1[ck->n + k] = mean_abs(a, b, per);
    }
    for (int k = 0; k < N; k++) {
        ensure_bucket(ck, bucket[k]);
        ck->bucket[ck->n + k] = bucket[k];
        ck->seed[ck->n + k] = seed ? seed[k] : -1;
        ck->bcount[bucket[k]]++;
        grid_keep(ck, bucket[k], x + k * per, yh + k * per);
    }
    ck->n += N;
    free(kl);
}

// scores N images (any N; split into passes of at most ck->batch)
static void check_images(Check *ck, const float *x, const int *bucket, const int64_t *seed, int N) {
    size_t per = (size_t)ck->C * ck->H * ck->W;
    for (int k0 = 0; k0 < N; k0 += ck->batch) {
        int m = N - k0 < ck->batch ? N - k0 : ck->batch;
        check_chunk(ck, x + k0 * per, bucket + k0, seed ? seed + k0 : NULL, m);
    }
}

// ---- grid.png ----
// Pairs of (original | reconstruction), one row per entry: row r shows count[r] pairs taken from
// orig[r], recon[r] ((cols, C, H, W) each, in [-1, 1]). Tiles are scaled up by the smallest integer
// that makes them at least min_tile pixels; a pair's two tiles are GRID_PAIR_SEP apart, pairs and
// rows GRID_GAP apart, on white. out: RGB (3, rows*TH + (rows-1)*GAP, cols*(2*TW+SEP) + (cols-1)*GAP).
static int grid_render(Image *out, const float *const *orig, const float *const *recon, const int *count, int rows,
                       int cols, int C, int H, int W, Colormap cmap, int min_tile) {
    if (rows < 1 || cols < 1) return -1;
    int f = 1;
    while (H * f < min_tile || W * f < min_tile) f++;
    int TH = H * f, TW = W * f, PW = 2 * TW + GRID_PAIR_SEP;
    if (image_alloc(out, 3, rows * TH + (rows - 1) * GRID_GAP, cols * PW + (cols - 1) * GRID_GAP)) return -1;
    for (size_t i = 0; i < 3 * (size_t)out->H * out->W; i++) out->data[i] = 1.0f;
    size_t per = (size_t)C * H * W;
    for (int r = 0; r < rows; r++)
        for (int k = 0; k < count[r] && k < cols; k++) {
            int top = r * (TH + GRID_GAP), left = k * (PW + GRID_GAP);
            image_draw_tile(out, top, left, orig[r] + k * per, C, H, W, f, cmap);
            image_draw_tile(out, top, left + TW + GRID_PAIR_SEP, recon[r] + k * per, C, H, W, f, cmap);
        }
    return 0;
}

// ---- names and summaries ----
// bucket b -> user name: the stream's users table, else the VAE's, else "user_<label>"
static void bucket_name(char *buf, size_t n, int b, const json_t *stream_users, const json_t *vae_users) {
    if (b == 0) {
        snprintf(buf, n, "(no label)");
        return;
    }
    const json_t *s = json_array_get(stream_users, (size_t)b - 1);
    if (!json_is_string(s)) s = json_array_get(vae_users, (size_t)b - 1);
    if (json_is_string(s)) snprintf(buf, n, "%s", json_string_value(s));
    else snprintf(buf, n, "user_%d", b - 1);
}

static double mean_of(const double *v, int n) {
    double s = 0;
    for (int i = 0; i < n; i++) s += v[i];
    return n ? s / n : NAN;
}

static json_t *jnum(double v) { return isfinite(v) ? json_real(v) : json_null(); }

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

typedef struct {
    int n;
    double mean, median, std, min, max;
} Summary;

// of v[i] for the samples in bucket b (b < 0: all samples); NaNs (no SSIM) are left out
static Summary summarize(const Check *ck, const double *v, int b) {
    double *t = xmalloc(((size_t)ck->n + 1) * sizeof(double));
    int n = 0;
    for (int i = 0; i < ck->n; i++)
        if ((b < 0 || ck->bucket[i] == b) && isfinite(v[i])) t[n++] = v[i];
    Summary s = {n, NAN, NAN, NAN, NAN, NAN};
    if (n) {
        qsort(t, (size_t)n, sizeof(double), cmp_double);
        double sum = 0, ss = 0;
        for (int i = 0; i < n; i++) sum += t[i];
        s.mean = sum / n;
        for (int i = 0; i < n; i++) ss += (t[i] - s.mean) * (t[i] - s.mean);
        s.std = sqrt(ss / n);
        s.median = n % 2 ? t[n / 2] : 0.5 * (t[n / 2 - 1] + t[n / 2]);
        s.min = t[0], s.max = t[n - 1];
    }
    free(t);
    return s;
}

static json_t *summary_json(Summary s) {
    return json_pack("{s:o, s:o, s:o, s:o, s:o}", "mean", jnum(s.mean), "median", jnum(s.median), "std", jnum(s.std),
                     "min", jnum(s.min), "max", jnum(s.max));
}

static json_t *scores_json(const Check *ck, int b) {
    Summary p = summarize(ck, ck->psnr, b);
    return json_pack("{s:i, s:o, s:o, s:o}", "samples", b < 0 ? ck->n : ck->bcount[b], "psnr", summary_json(p), "ssim",
                     summary_json(summarize(ck, ck->ssim, b)), "l1", summary_json(summarize(ck, ck->l1, b)));
}

static json_t *stats_json(const RunStats *s, double sf) {
    double lo = s->min * sf, hi = s->max * sf;
    if (sf < 0) lo = s->max * sf, hi = s->min * sf;
    return json_pack("{s:o, s:o, s:o, s:o, s:{s:o, s:o, s:o, s:o}}", "mean", jnum(s->mean), "std", jnum(stats_std(s)),
                     "min", jnum(s->min), "max", jnum(s->max), "scaled", "mean", jnum(s->mean * sf), "std",
                     jnum(stats_std(s) * fabs(sf)), "min", jnum(lo), "max", jnum(hi));
}

// ---- the report ----
typedef struct {
    const char *vae_dir, *endpoint;
    const VaeFolder *vae;
    const json_t *stream_users;  // last users table seen in the stream (or NULL)
    json_t *stream_meta;         // first batch frame's meta (or NULL)
    long long frames, bad_frames, stream_total;  // stream_total -1 if no frame said
    const char *stopped_by;      // "end", "max", "timeout", "interrupt"
    double seconds;
} RunInfo;

// the buckets shown in the grid: those holding grid samples, in order
static int grid_rows(const Check *ck, int *rows) {
    int n = 0;
    for (int b = 0; b < ck->n_buckets; b++)
        if (ck->gorig[b] && ck->gcount[b]) rows[n++] = b;
    return n;
}

static json_t *report_json(const Check *ck, const RunInfo *ri, const int *rows, int n_rows, int grid_ok) {
    const VaeConfig *c = &ck->model->cfg;
    float sf = c->scaling_factor;
    char name[256];
    json_t *per_user = json_object(), *ps = json_object();
    for (int b = 0; b < ck->n_buckets; b++) {
        if (!ck->bcount[b]) continue;
        bucket_name(name, sizeof(name), b, ri->stream_users, ri->vae->users);
        json_t *u = scores_json(ck, b);
        json_object_set_new(u, "label", b ? json_integer(b - 1) : json_null());
        json_object_set_new(per_user, name, u);
    }
    json_t *pu = json_array(), *pseed = json_array(), *pp = json_array(), *pss = json_array(), *pl = json_array();
    for (int i = 0; i < ck->n; i++) {
        bucket_name(name, sizeof(name), ck->bucket[i], ri->stream_users, ri->vae->users);
        json_array_append_new(pu, json_string(name));
        json_array_append_new(pseed, ck->seed[i] >= 0 ? json_integer(ck->seed[i]) : json_null());
        json_array_append_new(pp, jnum(ck->psnr[i]));
        json_array_append_new(pss, jnum(ck->ssim[i]));
        json_array_append_new(pl, jnum(ck->l1[i]));
    }
    json_object_set_new(ps, "user", pu), json_object_set_new(ps, "seed", pseed);
    json_object_set_new(ps, "psnr", pp), json_object_set_new(ps, "ssim", pss), json_object_set_new(ps, "l1", pl);

    json_t *chans = json_array();
    for (int ch = 0; ch < ck->L; ch++) {
        json_t *s = stats_json(&ck->lat[ch], sf);
        json_object_set_new(s, "channel", json_integer(ch));
        json_array_append_new(chans, s);
    }
    double nlat = ck->lat_all.n, std_all = stats_std(&ck->lat_all);
    json_t *latent = json_pack("{s:[i,i,i], s:f, s:o, s:o, s:o, s:o, s:o, s:s}", "shape", ck->L, ck->h, ck->w,
                               "scaling_factor", (double)sf, "per_channel", chans, "all", stats_json(&ck->lat_all, sf),
                               "scaling_factor_from_data", jnum(1.0 / std_all),
                               "posterior_std_mean", jnum(nlat > 0 ? ck->post_std_sum / nlat : NAN),
                               "kl_mean", jnum(ck->n ? ck->kl_sum / ck->n : NAN),
                               "note", "statistics of the posterior means mu (unscaled); 'scaled' = times scaling_factor, "
                                       "what the diffusion model sees; scaling_factor_from_data = 1 / std of all values");
    json_t *grid_users = json_array();
    for (int r = 0; r < n_rows; r++) {
        bucket_name(name, sizeof(name), rows[r], ri->stream_users, ri->vae->users);
        json_array_append_new(grid_users, json_pack("{s:s, s:i}", "user", name, "samples", ck->gcount[rows[r]]));
    }
    json_t *doppel = vae_folder_doppel(ri->vae);
    json_t *model = json_pack("{s:s, s:o, s:I, s:i, s:s, s:O}", "class", "AutoencoderKL", "config",
                              vae_config_to_json(c), "parameters", (json_int_t)ck->model->ps.total, "downscale",
                              vae_downscale(c), "colormap", colormap_name(ri->vae->cmap), "doppel",
                              doppel ? doppel : json_null());
    json_t *stream = json_pack("{s:s, s:I, s:I, s:o, s:s, s:O}", "endpoint", ri->endpoint, "frames",
                               (json_int_t)ri->frames, "bad_frames", (json_int_t)ri->bad_frames, "total",
                               ri->stream_total >= 0 ? json_integer(ri->stream_total) : json_null(), "stopped_by",
                               ri->stopped_by, "meta", ri->stream_meta ? ri->stream_meta : json_null());
    json_t *metrics = json_pack(
        "{s:s, s:s, s:s, s:s}", "reconstruction",
        "x^ = clamp(decode(mu), -1, 1) with mu the posterior mean (no sampling); images in [-1, 1]",
        "psnr", "10 log10(2^2 / MSE) dB (data range 2); 99 for identical images",
        "ssim", "Wang et al. 2004: 11x11 Gaussian window sigma 1.5, K1 0.01, K2 0.03, valid positions, mean over "
                "channels (= skimage structural_similarity gaussian_weights=True, use_sample_covariance=False, data_range=2)",
        "l1", "mean |x - x^| in [-1, 1] units (half of it in [0, 1] units)");
    return json_pack("{s:s, s:s, s:s, s:i, s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:{s:o, s:o, s:i, s:i}, s:{s:f, s:o}}",
                     "tool", "doppel-encoder check", "version", DOPPEL_VERSION, "vae", ri->vae_dir, "samples", ck->n,
                     "model", model, "stream", stream, "metrics", metrics, "overall", scores_json(ck, -1), "per_user",
                     per_user, "latent", latent, "per_sample", ps, "grid", "file",
                     grid_ok ? json_string("grid.png") : json_null(), "users", grid_users, "samples_per_user",
                     ck->grid_samples, "scale_min_px", GRID_MIN_TILE, "timing", "seconds", ri->seconds,
                     "images_per_second", jnum(ri->seconds > 0 ? ck->n / ri->seconds : NAN));
}

// " | 12.34" or " | –" for a missing (null) figure
static void md_num(FILE *f, const json_t *summary, const char *key, int digits) {
    const json_t *v = json_object_get(summary, key);
    if (json_is_number(v)) fprintf(f, " | %.*f", digits, json_number_value(v));
    else fprintf(f, " | –");
}

static void md_row(FILE *f, const char *name, const json_t *s) {
    const json_t *p = json_object_get(s, "psnr");
    fprintf(f, "| %s | %lld", name, (long long)json_integer_value(json_object_get(s, "samples")));
    md_num(f, p, "mean", 2), md_num(f, p, "median", 2), md_num(f, p, "min", 2);
    md_num(f, json_object_get(s, "ssim"), "mean", 4), md_num(f, json_object_get(s, "l1"), "mean", 4);
    fprintf(f, " |\n");
}

static char *report_md(const json_t *rep, const Check *ck, const RunInfo *ri) {
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    CHECK(f, "open_memstream failed");
    const VaeConfig *c = &ck->model->cfg;
    fprintf(f, "# VAE reconstruction check\n\n");
    fprintf(f, "- VAE: `%s` (AutoencoderKL, %d×%d×%d → %d×%d×%d latents, block_out_channels (", ri->vae_dir, ck->C, ck->H,
            ck->W, ck->L, ck->h, ck->w);
    for (int i = 0; i < c->n_blocks; i++) fprintf(f, i ? ", %d" : "%d", c->block_out_channels[i]);
    fprintf(f, "), %zu parameters, scaling_factor %g)\n", ck->model->ps.total, (double)c->scaling_factor);
    fprintf(f, "- Stream: `%s`, %d images in %lld frames%s; stopped by %s\n", ri->endpoint, ck->n, ri->frames,
            ri->bad_frames ? " (bad frames skipped)" : "", ri->stopped_by);
    fprintf(f, "- Reconstruction x̂ = clamp(decode(μ), −1, 1) from the posterior mean μ. PSNR in dB with data range 2 "
               "(images in [−1, 1]); SSIM with an 11×11 Gaussian window (σ 1.5), valid positions, mean over channels; "
               "L1 = mean |x − x̂| in [−1, 1] units (half of it in [0, 1] units).\n\n");
    fprintf(f, "| user | images | PSNR mean (dB) | PSNR median | PSNR min | SSIM mean | L1 mean |\n");
    fprintf(f, "|---|---:|---:|---:|---:|---:|---:|\n");
    const char *name;
    json_t *u;
    json_object_foreach(json_object_get(rep, "per_user"), name, u) md_row(f, name, u);
    md_row(f, "**all**", json_object_get(rep, "overall"));

    float sf = c->scaling_factor;
    fprintf(f, "\n## Latents (posterior means μ)\n\n");
    fprintf(f, "scaling_factor in config.json: %g; std of all μ values %.4f, so 1/std = %.4f; mean posterior σ %.4f; "
               "mean KL per image %.2f.\n\n",
            (double)sf, stats_std(&ck->lat_all), 1.0 / stats_std(&ck->lat_all),
            ck->lat_all.n > 0 ? ck->post_std_sum / ck->lat_all.n : NAN, ck->n ? ck->kl_sum / ck->n : NAN);
    fprintf(f, "| channel | mean | std | min | max | mean × sf | std × sf | min × sf | max × sf |\n");
    fprintf(f, "|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    for (int ch = 0; ch <= ck->L; ch++) {
        const RunStats *s = ch < ck->L ? &ck->lat[ch] : &ck->lat_all;
        double sd = stats_std(s), lo = s->min * sf, hi = s->max * sf;
        if (sf < 0) lo = s->max * sf, hi = s->min * sf;
        if (ch < ck->L) fprintf(f, "| %d ", ch);
        else fprintf(f, "| **all** ");
        fprintf(f, "| %.4f | %.4f | %.4f | %.4f | %.4f | %.4f | %.4f | %.4f |\n", s->mean, sd, s->min, s->max,
                s->mean * sf, sd * fabs(sf), lo, hi);
    }
    json_t *gu = json_object_get(json_object_get(rep, "grid"), "users");
    if (json_array_size(gu) && json_is_string(json_object_get(json_object_get(rep, "grid"), "file"))) {
        fprintf(f, "\n## Originals and reconstructions\n\nRows, top to bottom: ");
        size_t i;
        json_t *v;
        json_array_foreach(gu, i, v) fprintf(f, "%s%s", i ? ", " : "", json_string_value(json_object_get(v, "user")));
        fprintf(f, ". In each pair the original is on the left, its reconstruction on the right%s.\n\n",
                ck->C == 1 ? " (1-channel images drawn with the VAE's colour map)" : "");
        fprintf(f, "![originals and reconstructions](grid.png)\n");
    }
    fclose(f);
    return buf;
}

static int write_report(const char *dir, const Check *ck, const RunInfo *ri, char *err, size_t errlen) {
    char path[8192];
    int rows[1024], n_rows = 0;
    if (ck->grid_users > 0) n_rows = grid_rows(ck, rows);
    int grid_ok = 0;
    if (n_rows) {
        const float *orig[1024], *recon[1024];
        int count[1024];
        for (int r = 0; r < n_rows; r++) orig[r] = ck->gorig[rows[r]], recon[r] = ck->grecon[rows[r]], count[r] = ck->gcount[rows[r]];
        Image g = {0};
        if (grid_render(&g, orig, recon, count, n_rows, ck->grid_samples, ck->C, ck->H, ck->W, ri->vae->cmap, GRID_MIN_TILE))
            return errf(err, errlen, "cannot allocate the grid image");
        snprintf(path, sizeof(path), "%s/grid.png", dir);
        int rc = image_write_png(path, &g, 8, NULL, err, errlen);
        image_free(&g);
        if (rc) return -1;
        grid_ok = 1;
    }
    json_t *rep = report_json(ck, ri, rows, n_rows, grid_ok);
    char *js = json_dumps(rep, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    char *md = report_md(rep, ck, ri);
    json_decref(rep);
    snprintf(path, sizeof(path), "%s/report.json", dir);
    int rc = write_file_atomic(path, js, strlen(js), err, errlen);
    snprintf(path, sizeof(path), "%s/report.md", dir);
    if (!rc) rc = write_file_atomic(path, md, strlen(md), err, errlen);
    free(js), free(md);
    return rc;
}

// ---- receiving ----
// Checks one batch frame and scores its images. Returns 1 scored, 0 skipped (bad frame: err says
// why), -1 fatal (images that do not fit the VAE: err says why).
static int take_batch(Check *ck, const Frame *f, long max_left, float **buf, size_t *cap, int **bk, char *err,
                      size_t errlen) {
    if (frame_check_batch(f, err, errlen)) return 0;
    const WireTensor *img = frame_tensor(f, WIRE_IMAGE), *lab = frame_tensor(f, WIRE_LABEL), *sd = frame_tensor(f, WIRE_SEED);
    if (!img) {
        char names[256] = "";
        for (int i = 0; i < f->n_tensors; i++)
            snprintf(names + strlen(names), sizeof(names) - strlen(names), "%s%s", i ? ", " : "", f->tensors[i].name);
        errf(err, errlen, "batch #%llu of stream '%s' has no 'image' tensor (it has: %s); check reads images, e.g. from "
                          "doppel-loader", (unsigned long long)f->seq, f->stream, names);
        return -1;
    }
    if (img->shape[1] != ck->C || img->shape[2] != ck->H || img->shape[3] != ck->W) {
        errf(err, errlen, "stream images are (%lld, %lld, %lld) (C, H, W) but the VAE takes (%d, %d, %d) (in_channels %d, "
                          "sample_size %d): stream with doppel-loader --channels %d --resolution %d, or use a VAE for this data",
             (long long)img->shape[1], (long long)img->shape[2], (long long)img->shape[3], ck->C, ck->H, ck->W, ck->C,
             ck->H, ck->C, ck->H);
        return -1;
    }
    int N = (int)img->shape[0];
    if (max_left > 0 && N > max_left) N = (int)max_left;
    if (img->numel > *cap) {
        *cap = img->numel;
        *buf = xrealloc(*buf, *cap * sizeof(float));
    }
    *bk = xrealloc(*bk, ((size_t)N + 1) * sizeof(int));
    for (int k = 0; k < N; k++) {
        int32_t l = -1;
        if (lab) memcpy(&l, (const char *)lab->data + 4 * (size_t)k, 4);
        if (lab && (l < 0 || l >= MAX_LABEL)) {
            errf(err, errlen, "batch #%llu: label %d is out of range [0, %d)", (unsigned long long)f->seq, l, MAX_LABEL);
            return 0;
        }
        (*bk)[k] = l + 1;
    }
    int64_t *seeds = NULL;
    if (sd) {
        seeds = xmalloc(((size_t)N + 1) * sizeof(int64_t));
        memcpy(seeds, sd->data, (size_t)N * sizeof(int64_t));
    }
    wire_tensor_f32(*buf, img);
    check_images(ck, *buf, *bk, seeds, N);
    free(seeds);
    return 1;
}

int encoder_check_main(int argc, char **argv) {
    Options o = parse_args(argc, argv);
    if (o.threads) omp_set_num_threads(o.threads);
    char err[1024];
    VaeFolder vae;
    if (vae_folder_load(&vae, o.vae, err, sizeof(err))) {
        fprintf(stderr, MSG "%s\n", err);
        return EXIT_RUNTIME;
    }
    const VaeConfig *c = &vae.model.cfg;
    if (c->out_channels != c->in_channels) {
        fprintf(stderr, MSG "VAE %s has in_channels %d but out_channels %d: reconstructions cannot be compared with inputs\n",
                o.vae, c->in_channels, c->out_channels);
        vae_folder_free(&vae);
        return EXIT_RUNTIME;
    }
    if (mkdir_p(o.report, err, sizeof(err))) {
        fprintf(stderr, MSG "%s\n", err);
        vae_folder_free(&vae);
        return EXIT_RUNTIME;
    }
    zsock_install_signals();
    void *in = zsock_open(ZMQ_PULL, o.in, 0, err, sizeof(err));
    if (!in) {
        fprintf(stderr, MSG "%s\n", err);
        vae_folder_free(&vae);
        return EXIT_RUNTIME;
    }
    Check ck;
    int gpu = device_choose(o.device, "doppel-encoder");
    if (gpu) fprintf(stderr, MSG "checking on %s\n", cuda_device_name());
    check_init(&ck, &vae.model, o.batch, o.grid_users, o.grid_samples, gpu);
    fprintf(stderr, MSG "VAE %s (%dx%dx%d -> %dx%dx%d, %zu parameters), reading %s\n", o.vae, ck.C, ck.H, ck.W, ck.L, ck.h,
            ck.w, vae.model.ps.total, o.in);
    RunInfo ri = {.vae_dir = o.vae, .endpoint = o.in, .vae = &vae, .stream_total = -1, .stopped_by = "interrupt"};
    json_t *users = NULL;
    float *buf = NULL;
    int *bk = NULL;
    size_t cap = 0;
    long long received = 0, expect = -1;
    int rc = EXIT_OK, done = 0;
    double t0 = cli_now(), last = t0;
    Progress p;
    progress_start(&p, "check", o.max, "img");
    while (!done && !zsock_interrupted()) {
        void *socks[1] = {in};
        if (zsock_poll_in(socks, 1, 200) < 0) {
            if (o.timeout_s && cli_now() - last > o.timeout_s) {
                fprintf(stderr, MSG "no frame for %d s on %s; giving up\n", o.timeout_s, o.in);
                ri.stopped_by = "timeout", rc = EXIT_RUNTIME;
                break;
            }
            continue;
        }
        Received r = {0};
        int got = zsock_recv_frame(in, &r, NULL, 0, err, sizeof(err));
        if (got < 0) {
            fprintf(stderr, MSG "bad frame skipped: %s\n", err);
            ri.bad_frames++;
            continue;
        }
        if (!got) continue;
        last = cli_now();
        Frame *f = &r.frame;
        json_t *fu = f->meta ? json_object_get(f->meta, "users") : NULL;
        if (json_is_array(fu)) json_decref(users), users = json_incref(fu);
        if (f->kind == FRAME_BATCH) {
            ri.frames++;
            if (!ri.stream_meta && f->meta) {
                ri.stream_meta = json_deep_copy(f->meta);
                json_object_del(ri.stream_meta, "users");  // per_user names them
            }
            if (f->has_total) {
                ri.stream_total = (long long)f->total;
                p.total = o.max && o.max < (long)f->total ? o.max : (int64_t)f->total;
            }
            const WireTensor *img = frame_tensor(f, WIRE_IMAGE);
            received += img && img->ndim == 4 ? img->shape[0] : 0;
            int t = take_batch(&ck, f, o.max ? o.max - ck.n : 0, &buf, &cap, &bk, err, sizeof(err));
            if (t < 0) {
                fprintf(stderr, MSG "%s\n", err);
                rc = EXIT_RUNTIME, done = 1, ri.stopped_by = "error";
            } else if (t == 0) {
                fprintf(stderr, MSG "bad frame skipped: %s\n", err);
                ri.bad_frames++;
            }
            char extra[96];
            snprintf(extra, sizeof(extra), "PSNR %.2f dB, SSIM %.3f", mean_of(ck.psnr, ck.n), mean_of(ck.ssim, ck.n));
            progress_update(&p, ck.n, extra);
            if (o.max && ck.n >= o.max) done = 1, ri.stopped_by = "max";
        } else if (f->kind == FRAME_END) {
            expect = f->has_total ? (long long)f->total : received;
            ri.stream_total = expect;
        } else {
            fprintf(stderr, MSG "ignoring a '%s' frame on %s\n", frame_kind_name(f->kind), o.in);
        }
        received_release(&r);
        if (!done && expect >= 0 && received >= expect) done = 1, ri.stopped_by = "end";
    }
    progress_finish(&p, NULL);
    ri.seconds = cli_now() - t0;
    ri.stream_users = users;
    int linger = 0;
    zmq_setsockopt(in, ZMQ_LINGER, &linger, sizeof(linger));
    zsock_close(&in);
    zsock_term();
    if (rc == EXIT_OK || !strcmp(ri.stopped_by, "timeout")) {
        if (!ck.n) {
            fprintf(stderr, MSG "no images arrived on %s; nothing to report\n", o.in);
            rc = EXIT_RUNTIME;
        } else if (write_report(o.report, &ck, &ri, err, sizeof(err))) {
            fprintf(stderr, MSG "writing the report: %s\n", err);
            rc = EXIT_RUNTIME;
        } else {
            Summary ps = summarize(&ck, ck.psnr, -1);
            fprintf(stderr, MSG "%d images: PSNR %.2f dB (median %.2f), SSIM %.4f, L1 %.4f -> %s/report.md%s\n", ck.n,
                    ps.mean, ps.median, summarize(&ck, ck.ssim, -1).mean, summarize(&ck, ck.l1, -1).mean, o.report,
                    strcmp(ri.stopped_by, "end") && strcmp(ri.stopped_by, "max") ? " (partial: the stream did not end)" : "");
        }
    }
    json_decref(users);
    json_decref(ri.stream_meta);
    free(buf), free(bk);
    check_free(&ck);
    vae_folder_free(&vae);
    return rc;
}

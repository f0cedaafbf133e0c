// test_check.c: common/metrics/quality.c against numpy (tests/reference/quality.py), the pieces of
// `doppel-encoder check` in process (grid layout, a tiny VAE scored and reported without sockets),
// and the command end to end (loader -> doppel-encoder check) once bin/doppel-encoder exists.
#include "../encoder/check.c"  // its static pieces: test binaries link libdoppel, not encoder/

#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include "data/dataset.h"
#include "proc.h"
#include "testlib.h"

#define OUT_DIR "build/test-out"

// the two test images of tests/reference/quality.py, (C, H, W)
static void image_a(float *x, int C, int H, int W) {
    for (int c = 0; c < C; c++)
        for (int i = 0; i < H; i++)
            for (int j = 0; j < W; j++) x[((size_t)c * H + i) * W + j] = (float)(0.9 * sin(0.37 * i + 0.5 * c) * cos(0.23 * j - 0.3 * c));
}

static void image_b(float *x, int C, int H, int W) {
    for (int c = 0; c < C; c++)
        for (int i = 0; i < H; i++)
            for (int j = 0; j < W; j++) {
                double a = 0.9 * sin(0.37 * i + 0.5 * c) * cos(0.23 * j - 0.3 * c);
                x[((size_t)c * H + i) * W + j] = (float)(0.7 * a + 0.25 * sin(1.3 * i + 0.9 * j + c) + 0.05 * cos(0.11 * i * j));
            }
}

// values printed by `/usr/bin/python3 tests/reference/quality.py` (numpy 1.24; its SSIM agrees with
// skimage's recipe through scipy.ndimage.gaussian_filter to 1e-16)
static void test_quality_vs_numpy(void) {
    static const struct { int C, H, W; double psnr, ssim, l1; } ref[] = {
        {1, 32, 32, 18.859508641540, 0.638058960520, 0.188404121256},
        {2, 32, 32, 18.810561538366, 0.636530246663, 0.188945188539},
        {1, 20, 27, 19.290276667319, 0.648583146725, 0.181360087061},
    };
    for (size_t t = 0; t < sizeof(ref) / sizeof(ref[0]); t++) {
        int C = ref[t].C, H = ref[t].H, W = ref[t].W;
        size_t n = (size_t)C * H * W;
        float *a = xmalloc(n * sizeof(float)), *b = xmalloc(n * sizeof(float));
        image_a(a, C, H, W), image_b(b, C, H, W);
        double p = psnr(a, b, n, 2.0), s = ssim(a, b, C, H, W, 2.0), l = mean_abs(a, b, n);
        EXPECT(fabs(p - ref[t].psnr) < 1e-6, "%dx%dx%d: psnr %.12f, numpy %.12f", C, H, W, p, ref[t].psnr);
        EXPECT(fabs(s - ref[t].ssim) < 1e-6, "%dx%dx%d: ssim %.12f, numpy %.12f", C, H, W, s, ref[t].ssim);
        EXPECT(fabs(l - ref[t].l1) < 1e-6, "%dx%dx%d: mean_abs %.12f, numpy %.12f", C, H, W, l, ref[t].l1);
        EXPECT(fabs(ssim(b, a, C, H, W, 2.0) - s) < 1e-12, "ssim is not symmetric");
        EXPECT(fabs(ssim(a, a, C, H, W, 2.0) - 1.0) < 1e-12, "ssim(a, a) = %.15f", ssim(a, a, C, H, W, 2.0));
        EXPECT(psnr(a, a, n, 2.0) == PSNR_IDENTICAL && mean_abs(a, a, n) == 0, "identical images");
        // data range 1 instead of 2: 20 log10(2) dB less
        EXPECT(fabs(psnr(a, b, n, 1.0) - (p - 20 * log10(2.0))) < 1e-9, "psnr data range");
        free(a), free(b);
    }
    float tiny[10 * 12] = {0};
    EXPECT(isnan(ssim(tiny, tiny, 1, 10, 12, 2.0)), "ssim of a 10x12 image (smaller than the window) is not NaN");
}

// ---- grid layout ----
static void test_grid_render(void) {
    enum { H = 8, W = 10, COLS = 3 };
    float orig[2][COLS][H * W], recon[2][COLS][H * W];
    for (int r = 0; r < 2; r++)
        for (int k = 0; k < COLS; k++)
            for (int i = 0; i < H * W; i++) {
                orig[r][k][i] = (float)sin(0.1 * i + r + 3 * k);
                recon[r][k][i] = (float)cos(0.2 * i - r + k);
            }
    const float *o[2] = {&orig[0][0][0], &orig[1][0][0]}, *rc[2] = {&recon[0][0][0], &recon[1][0][0]};
    int count[2] = {3, 1};
    Image g = {0};
    EXPECT(grid_render(&g, o, rc, count, 2, COLS, 1, H, W, CMAP_JET, 96) == 0, "grid_render failed");
    // scale 12 (8*12 = 96): tiles 96 x 120, pairs 2*120 + 2 wide, 8 between pairs and rows
    int f = 12, TH = 96, TW = 120, PW = 2 * TW + GRID_PAIR_SEP;
    EXPECT(g.C == 3 && g.H == 2 * TH + GRID_GAP && g.W == COLS * PW + (COLS - 1) * GRID_GAP, "grid is %dx%dx%d", g.C, g.H, g.W);
    size_t plane = (size_t)g.H * g.W;
#define PIX(y, x, ch) g.data[(ch) * plane + (size_t)(y) * g.W + (x)]
    int bad = 0;
    for (int r = 0; r < 2; r++)
        for (int k = 0; k < count[r]; k++)
            for (int y = 0; y < TH; y += 7)
                for (int x = 0; x < TW; x += 5) {
                    int top = r * (TH + GRID_GAP), left = k * (PW + GRID_GAP);
                    float want_o[3], want_r[3];
                    colormap_apply(CMAP_JET, 0.5f * (orig[r][k][(y / f) * W + x / f] + 1), want_o);
                    colormap_apply(CMAP_JET, 0.5f * (recon[r][k][(y / f) * W + x / f] + 1), want_r);
                    for (int ch = 0; ch < 3; ch++) {
                        bad += PIX(top + y, left + x, ch) != want_o[ch];
                        bad += PIX(top + y, left + TW + GRID_PAIR_SEP + x, ch) != want_r[ch];
                    }
                }
    EXPECT(!bad, "%d grid pixels differ from the colour-mapped, nearest-scaled tiles", bad);
    for (int y = 0; y < g.H; y++) {  // the separator inside a pair, and the empty pairs of row 1, are white
        bad += PIX(y, TW, 0) != 1 || PIX(y, TW + 1, 2) != 1;
        if (y >= TH + GRID_GAP) bad += PIX(y, PW + GRID_GAP + 3, 1) != 1;
    }
    EXPECT(!bad, "%d separator / empty pixels are not white", bad);
    image_free(&g);

    // 3 channels go through as RGB: (v + 1) / 2
    float rgb[3 * 12 * 12], rgb2[3 * 12 * 12];
    for (int i = 0; i < 3 * 12 * 12; i++) rgb[i] = (float)sin(0.3 * i), rgb2[i] = -rgb[i];
    const float *o3[1] = {rgb}, *r3[1] = {rgb2};
    EXPECT(grid_render(&g, o3, r3, (int[]){1}, 1, 1, 3, 12, 12, CMAP_JET, 96) == 0 && g.H == 96 && g.W == 2 * 96 + 2,
           "rgb grid %dx%d", g.H, g.W);
    plane = (size_t)g.H * g.W;
    for (int ch = 0; ch < 3 && g.data; ch++)
        EXPECT(fabsf(PIX(95, 95, ch) - 0.5f * (rgb[ch * 144 + 11 * 12 + 11] + 1)) < 1e-7f &&
                   fabsf(PIX(95, 98 + 95, ch) - 0.5f * (rgb2[ch * 144 + 11 * 12 + 11] + 1)) < 1e-7f,
               "rgb pixel, channel %d", ch);
#undef PIX
    image_free(&g);
}

// ---- a tiny VAE scored in process ----
static void tiny_vae(VaeFolder *v, uint64_t seed) {
    memset(v, 0, sizeof(*v));
    VaeConfig cfg;
    preset_vae("tiny", &cfg);
    vae_build(&v->model, &cfg);
    Rng rng;
    rng_seed(&rng, seed);
    params_init(&v->model.ps, &rng);
    v->config = json_pack("{s:{s:s, s:s}}", "doppel", "colormap", "jet", "preset", "tiny");
    v->cmap = CMAP_JET;
}

// n_users x per_user simulated spectrograms at 32 x 32, user-major; bucket = user + 1
static float *sim_images(int n_users, int per_user, int *bucket) {
    Dataset ds;
    dataset_synthetic(&ds, n_users, per_user, 7);
    Preprocess pp = {32, 1, CMAP_JET};
    float *x = xmalloc((size_t)ds.n_samples * 32 * 32 * sizeof(float));
    char err[256];
    for (int i = 0; i < ds.n_samples; i++) {
        EXPECT(preprocess_sample(&ds, i, &pp, x + (size_t)i * 1024, err, sizeof(err)) == 0, "%s", err);
        bucket[i] = ds.samples[i].user + 1;
    }
    dataset_free(&ds);
    return x;
}

static void test_check_in_process(void) {
    VaeFolder v;
    tiny_vae(&v, 3);
    int bucket[15], rev[15];
    int64_t seed[15], rseed[15];
    float *x = sim_images(3, 5, bucket), *xr = xmalloc(15 * 1024 * sizeof(float));
    for (int i = 0; i < 15; i++) seed[i] = 100 + i;
    for (int i = 0; i < 15; i++) {  // users in reverse order: the lower users must displace the higher in the grid
        rev[i] = bucket[14 - i], rseed[i] = seed[14 - i];
        memcpy(xr + i * 1024, x + (14 - i) * 1024, 1024 * sizeof(float));
    }
    Check a, b;
    check_init(&a, &v.model, 4, 2, 4, 0);
    check_init(&b, &v.model, 16, 2, 4, 0);
    check_images(&a, xr, rev, rseed, 7);  // two calls, uneven passes of 4
    check_images(&a, xr + 7 * 1024, rev + 7, rseed + 7, 8);
    check_images(&b, x, bucket, seed, 15);
    EXPECT(a.n == 15 && b.n == 15, "scored %d and %d images", a.n, b.n);
    EXPECT(a.gorig[1] && a.gorig[2] && !a.gorig[3] && a.gcount[1] == 4 && a.gcount[2] == 4,
           "grid keeps the 2 lowest users, 4 each (kept 1:%d 2:%d 3:%d)", a.gcount[1], a.gcount[2], a.gcount[3]);
    EXPECT(a.bcount[1] == 5 && a.bcount[2] == 5 && a.bcount[3] == 5, "per-user counts");
    // the same images scored in another order and batching give the same figures
    for (int i = 0; i < 15; i++) {
        int j = 14 - i;  // a's i-th sample is b's j-th
        EXPECT(fabs(a.psnr[i] - b.psnr[j]) < 1e-4 && fabs(a.ssim[i] - b.ssim[j]) < 1e-5 && fabs(a.l1[i] - b.l1[j]) < 1e-5 &&
                   a.seed[i] == b.seed[j] && a.bucket[i] == b.bucket[j],
               "sample %d: psnr %.6f vs %.6f, ssim %.6f vs %.6f, l1 %.6f vs %.6f, seed %lld vs %lld, user %d vs %d", i, a.psnr[i],
               b.psnr[j], a.ssim[i], b.ssim[j], a.l1[i], b.l1[j], (long long)a.seed[i], (long long)b.seed[j], a.bucket[i], b.bucket[j]);
        EXPECT(isfinite(b.psnr[j]) && b.ssim[j] > -1 && b.ssim[j] <= 1 && b.l1[j] > 0, "sample %d scores", j);
    }
    // sample 0 by hand: x -> moments -> mu -> decode -> clamp -> scores
    Arena ar;
    Rng rng;
    Ctx ctx;
    arena_init(&ar, 0), rng_seed(&rng, 0), ctx_init(&ctx, &v.model.ps, &ar, &rng);
    Tensor xt = ctx_tensor(&ctx, 1, 1, 32, 32);
    memcpy(xt.d, x, 1024 * sizeof(float));
    Tensor mom = vae_encode(&ctx, &v.model, xt);
    EXPECT(mom.C == 8 && mom.H == 16, "moments (%d, %d, %d)", mom.C, mom.H, mom.W);
    Tensor mu = {mom.d, 1, 4, 16, 16};  // the first 4 channels
    Tensor y = vae_decode(&ctx, &v.model, mu);
    for (int i = 0; i < 1024; i++) y.d[i] = fminf(fmaxf(y.d[i], -1), 1);
    EXPECT(fabs(psnr(x, y.d, 1024, 2) - b.psnr[0]) < 1e-4 && fabs(ssim(x, y.d, 1, 32, 32, 2) - b.ssim[0]) < 1e-5,
           "sample 0: psnr %.6f by hand, %.6f by check", psnr(x, y.d, 1024, 2), b.psnr[0]);
    RunStats s0 = stats_of(mu.d, 1, 0, 256);  // channel 0 of sample 0, against the running merge below
    double m = 0;
    for (int i = 0; i < 256; i++) m += mu.d[i];
    EXPECT(fabs(s0.mean - m / 256) < 1e-9, "stats_of mean");
    ctx_free(&ctx), arena_free(&ar);
    EXPECT(a.lat[0].n == 15 * 256 && a.lat_all.n == 15 * 1024, "latent counts %g %g", a.lat[0].n, a.lat_all.n);
    for (int c = 0; c < 4; c++)
        EXPECT(fabs(a.lat[c].mean - b.lat[c].mean) < 1e-6 && fabs(stats_std(&a.lat[c]) - stats_std(&b.lat[c])) < 1e-6 &&
                   a.lat[c].min == b.lat[c].min && a.lat[c].max == b.lat[c].max,
               "latent channel %d statistics depend on the batching", c);

    // the report
    char err[512];
    const char *dir = OUT_DIR "/check_in_process";
    EXPECT(mkdir_p(dir, err, sizeof(err)) == 0, "%s", err);
    json_t *users = json_pack("[s,s,s]", "ID_1", "ID_2", "ID_3");
    RunInfo ri = {.vae_dir = "in-memory", .endpoint = "none", .vae = &v, .stream_users = users, .frames = 2,
                  .stream_total = 15, .stopped_by = "end", .seconds = 1.0};
    EXPECT(write_report(dir, &a, &ri, err, sizeof(err)) == 0, "write_report: %s", err);
    char path[512];
    snprintf(path, sizeof(path), "%s/report.json", dir);
    json_error_t je;
    json_t *rep = json_load_file(path, 0, &je);
    EXPECT(rep, "report.json does not parse: %s", je.text);
    json_t *pu = json_object_get(rep, "per_user");
    EXPECT(json_integer_value(json_object_get(rep, "samples")) == 15 && json_object_size(pu) == 3, "samples / users");
    double sum = 0;
    for (int i = 0; i < 15; i++) sum += a.psnr[i];
    EXPECT(fabs(json_number_value(json_object_get(json_object_get(json_object_get(rep, "overall"), "psnr"), "mean")) - sum / 15) < 1e-9,
           "overall psnr mean");
    for (int u = 1; u <= 3; u++) {
        char name[16];
        snprintf(name, sizeof(name), "ID_%d", u);
        json_t *e = json_object_get(pu, name);
        EXPECT(e && json_integer_value(json_object_get(e, "samples")) == 5, "per_user %s", name);
        double us = 0;
        for (int i = 0; i < 15; i++) us += a.bucket[i] == u ? a.ssim[i] : 0;
        EXPECT(fabs(json_number_value(json_object_get(json_object_get(e, "ssim"), "mean")) - us / 5) < 1e-9, "%s ssim mean", name);
    }
    json_t *lat = json_object_get(rep, "latent");
    EXPECT(json_array_size(json_object_get(lat, "per_channel")) == 4 && json_is_number(json_object_get(lat, "scaling_factor_from_data")),
           "latent statistics");
    EXPECT(json_array_size(json_object_get(json_object_get(rep, "per_sample"), "psnr")) == 15, "per-sample scores");
    json_decref(rep);
    snprintf(path, sizeof(path), "%s/grid.png", dir);
    Image g;
    EXPECT(image_read_png(path, &g, err, sizeof(err)) == 0 && g.C == 3 && g.H == 2 * 96 + GRID_GAP &&
               g.W == 4 * (2 * 96 + GRID_PAIR_SEP) + 3 * GRID_GAP,
           "grid.png %dx%dx%d (%s)", g.C, g.H, g.W, err);
    image_free(&g);
    snprintf(path, sizeof(path), "%s/report.md", dir);
    char *md = proc_read(path);
    EXPECT(strstr(md, "| ID_3 | 5 |") && strstr(md, "| **all** | 15 |") && strstr(md, "![originals and reconstructions](grid.png)") &&
               strstr(md, "Rows, top to bottom: ID_1, ID_2."),
           "report.md:\n%s", md);
    free(md);
    json_decref(users);
    check_free(&a), check_free(&b);
    free(x), free(xr);
    vae_folder_free(&v);
}

// ---- the command ----
static int have_encoder(void) {
    char path[512];
    snprintf(path, sizeof(path), "%s/doppel-encoder", getenv("DOPPEL_BIN") ? getenv("DOPPEL_BIN") : "bin");
    return access(path, X_OK) == 0;
}

static void save_tiny_vae(const char *dir) {
    VaeFolder v;
    tiny_vae(&v, 11);
    char err[512];
    EXPECT(vae_folder_save(&v, dir, 0, err, sizeof(err)) == 0, "vae_folder_save: %s", err);
    vae_folder_free(&v);
}

static void test_check_command(void) {
    if (!have_encoder()) {
        tl_skip("bin/doppel-encoder is not built yet");
        return;
    }
    const char *vae = OUT_DIR "/check_vae", *rep = OUT_DIR "/check";
    save_tiny_vae(vae);
    char *out, *err;
    int rc = proc_run((const char *[]){"doppel-encoder", "check", "--help", NULL}, 10, &out, &err);
    EXPECT(rc == 0 && strstr(out, "examples:") && strstr(out, "examples:") < strstr(out, "  --"), "check --help: rc %d", rc);
    free(out), free(err);

    char bind[64], conn[64];
    int port = free_port();
    snprintf(bind, sizeof(bind), "@tcp://127.0.0.1:%d", port), snprintf(conn, sizeof(conn), ">tcp://127.0.0.1:%d", port);
    Proc loader, check;
    proc_start(&loader, (const char *[]){"doppel-loader", "--synthetic", "--users", "3", "--per-user", "5", "--resolution", "32",
                                         "--split", "all", "--batch", "4", "--out", bind, NULL});
    proc_start(&check, (const char *[]){"doppel-encoder", "check", "--vae", vae, "--in", conn, "--report", rep, "--timeout", "60", NULL});
    int rl = proc_wait(&loader, 90), rcheck = proc_wait(&check, 90);
    char *cerr = proc_read(check.err), *lerr = proc_read(loader.err);
    EXPECT(rl == 0 && rcheck == 0, "loader rc %d, check rc %d\nloader: %s\ncheck: %s", rl, rcheck, lerr, cerr);
    free(cerr), free(lerr);
    json_error_t je;
    json_t *j = json_load_file(OUT_DIR "/check/report.json", 0, &je);
    EXPECT(j, "report.json: %s", je.text);
    json_t *pu = json_object_get(j, "per_user");
    EXPECT(json_integer_value(json_object_get(j, "samples")) == 15, "samples in report.json");
    EXPECT(json_object_get(pu, "ID_1") && json_object_get(pu, "ID_2") && json_object_get(pu, "ID_3") && json_object_size(pu) == 3,
           "per_user entries");
    EXPECT(!strcmp(json_string_value(json_object_get(json_object_get(j, "stream"), "stopped_by")), "end"), "stopped by the end frame");
    json_decref(j);
    struct stat st;
    EXPECT(stat(OUT_DIR "/check/grid.png", &st) == 0 && st.st_size > 0, "grid.png missing");
    EXPECT(stat(OUT_DIR "/check/report.md", &st) == 0 && st.st_size > 0, "report.md missing");

    // images that do not fit the VAE: both shapes named, exit 1
    port = free_port();
    snprintf(bind, sizeof(bind), "@tcp://127.0.0.1:%d", port), snprintf(conn, sizeof(conn), ">tcp://127.0.0.1:%d", port);
    proc_start(&loader, (const char *[]){"doppel-loader", "--synthetic", "--users", "2", "--per-user", "2", "--resolution", "16",
                                         "--split", "all", "--out", bind, NULL});
    proc_start(&check, (const char *[]){"doppel-encoder", "check", "--vae", vae, "--in", conn, "--report", OUT_DIR "/check_bad",
                                        "--timeout", "60", NULL});
    rcheck = proc_wait(&check, 90);
    kill(loader.pid, SIGTERM);
    proc_wait(&loader, 30);
    cerr = proc_read(check.err);
    EXPECT(rcheck == 1 && strstr(cerr, "(1, 16, 16)") && strstr(cerr, "(1, 32, 32)"), "wrong shape: rc %d, stderr %s", rcheck, cerr);
    free(cerr);

    // a folder that is no VAE
    rc = proc_run((const char *[]){"doppel-encoder", "check", "--vae", "/nonexistent/vae", "--in", conn, "--report",
                                   OUT_DIR "/check_bad", NULL},
                  30, &out, &err);
    EXPECT(rc == 1 && strstr(err, "/nonexistent/vae"), "bad VAE folder: rc %d, stderr %s", rc, err);
    free(out), free(err);
    rc = proc_run((const char *[]){"doppel-encoder", "check", "--vae", vae, NULL}, 10, &out, &err);
    EXPECT(rc == 2 && strstr(err, "--in"), "missing --in: rc %d, stderr %s", rc, err);
    free(out), free(err);
}

int main(void) {
    char err[256];
    mkdir_p(OUT_DIR, err, sizeof(err));
    RUN(test_quality_vs_numpy);
    RUN(test_grid_render);
    RUN(test_check_in_process);
    RUN(test_check_command);
    return tl_finish();
}

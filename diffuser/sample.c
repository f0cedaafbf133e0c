// sample.c: doppel-diffuser sample — latents for chosen users, guided, to decoders and/or a cache.
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
#include "io/safetensors.h"
#include "net/zsock.h"
#include "diffuser.h"

// ---- sample grids (also used by train) ----
int diffuser_sample_grid(UNet2DModel *m, const NoiseSchedule *s, VaeFolder *vae, int per_user, float guidance,
                         uint64_t seed, const char *path, char *err, size_t errlen) {
    int U = m->cfg.num_class_embeds - 1, N = U * per_user;
    if (U < 1) return errf(err, errlen, "the UNet has no users");
    SampleConfig sc = {.guidance = guidance};
    if (sampler_init(&sc.sampler, s, SAMPLER_DDIM, 20, 0.0f, 0, err, errlen)) return -1;
    size_t per = (size_t)m->cfg.in_channels * m->cfg.sample_size * m->cfg.sample_size;
    int32_t *lab = xmalloc((size_t)N * sizeof(int32_t));
    int64_t *seeds = xmalloc((size_t)N * sizeof(int64_t));
    for (int u = 0; u < U; u++)
        for (int k = 0; k < per_user; k++) lab[u * per_user + k] = u, seeds[u * per_user + k] = sample_seed(seed, u, k);
    float *z = xmalloc((size_t)N * per * sizeof(float));
    Arena arena;
    arena_init(&arena, 0);
    Rng rng;
    rng_seed(&rng, seed);
    Ctx ctx;
    ctx_init(&ctx, &m->ps, &arena, &rng);
    const int B = 32;  // samples per UNet batch
    for (int n0 = 0; n0 < N; n0 += B)
        diffusion_sample(&ctx, m, s, &sc, lab + n0, seeds + n0, N - n0 < B ? N - n0 : B, z + n0 * per, NULL, NULL);
    // decode with the VAE: image = decode(z / scaling_factor)
    AutoencoderKL *v = &vae->model;
    int f = vae_downscale(&v->cfg), C = v->cfg.out_channels, H = m->cfg.sample_size * f;
    float *img = xmalloc((size_t)N * C * H * H * sizeof(float)), sf = v->cfg.scaling_factor;
    Ctx vctx;
    ctx_init(&vctx, &v->ps, &arena, &rng);
    for (int n0 = 0; n0 < N; n0 += 16) {
        int n = N - n0 < 16 ? N - n0 : 16;
        arena_reset(&arena);
        Tensor zt = ctx_tensor(&vctx, n, m->cfg.in_channels, m->cfg.sample_size, m->cfg.sample_size);
        for (size_t i = 0; i < tensor_numel(zt); i++) zt.d[i] = z[n0 * per + i] / sf;
        Tensor y = vae_decode(&vctx, v, zt);                      // [n, C, H, W]
        for (size_t i = 0; i < tensor_numel(y); i++) img[(size_t)n0 * C * H * H + i] = fminf(fmaxf(y.d[i], -1.0f), 1.0f);
    }
    Image grid;
    int rc = image_grid(&grid, img, NULL, U, per_user, C, H, H, vae->cmap, 96, 4);
    if (rc) errf(err, errlen, "cannot allocate the grid");
    else rc = image_write_png(path, &grid, 8, NULL, err, errlen), image_free(&grid);
    ctx_free(&vctx), ctx_free(&ctx), arena_free(&arena);
    free(lab), free(seeds), free(z), free(img);
    return rc;
}

// ---- sample ----
typedef struct {
    const char *unet, *users, *out, *cache, *vae, *classifier, *device, *precision;
    int per_user, steps, batch, karras, no_ema, threads, timeout_s, scale_given;
    double guidance, eta, classifier_scale;
    uint64_t seed;
    SamplerKind kind;
} SampleOptions;

static const char *USAGE_SAMPLE =
    "usage: doppel-diffuser sample --unet DIR [options]\n"
    "\n"
    "examples:\n"
    "  doppel-diffuser sample --unet runs/unet --users all --per-user 16 --out @tcp://127.0.0.1:5556 &\n"
    "  doppel-decoder --vae runs/vae --in tcp://127.0.0.1:5556 --png runs/generated\n"
    "  doppel-diffuser sample --unet runs/unet --users ID_3,ID_7 --per-user 4 --sampler ddim --steps 50 --guidance 4 \\\n"
    "      --cache runs/gen-latents.safetensors\n"
    "  doppel-diffuser sample --unet runs/unet --users ID_3 --per-user 1 --seed 2000005   # regenerates one sample\n"
    "\n"
    "  --unet DIR           the UNet folder (doppel-diffuser train); its EMA weights unless --no-ema\n"
    "  --users all|LIST     users to generate: names (ID_3) or label indices from 0, comma-separated (all)\n"
    "  --per-user N         samples per user (8)\n"
    "  --sampler ddpm|ddim|dpmpp2m   (dpmpp2m = DPM-Solver++ 2M)   --steps S (20)\n"
    "  --eta E              DDIM's eta (0)         --karras    Karras sigmas (DPM-Solver++)\n"
    "  --guidance G         classifier-free guidance scale (4; 1 = conditional only, no 'no user' pass)\n"
    "  --classifier DIR     classifier guidance with a latent classifier (doppel-diffuser train-classifier;\n"
    "                       it must share the UNet's users, latent shape and noise schedule)\n"
    "  --classifier-scale S its gradient's scale: eps - sqrt(1 - alphas_cumprod[t]) S grad log p(user | x_t) (1)\n"
    "  --seed S             sample k of user u has seed S + 1000000 u + k (in the 'seed' tensor and\n"
    "                       the PNG names); its noise comes from that seed alone, so any sample can be\n"
    "                       regenerated with --users <u> --per-user 1 --seed <its seed - 1000000 u>\n"
    "  --batch B            samples per UNet batch and per frame (32)\n"
    "  --out EP             send 'latent' frames (PUSH; bare: bind) to doppel-decoder(s), then 'end'\n"
    "  --cache FILE         also write every latent + label + seed to a safetensors file\n"
    "  --vae DIR            refuse to run unless this VAE fits the UNet (channels, size, users)\n"
    "  --timeout S          give up when no decoder takes a frame for S seconds (300)\n"
    "  --device cpu|cuda|auto  where the UNet runs (auto: the GPU when there is one; classifier\n"
    "                       guidance runs on the CPU)\n"
    "  --precision fp32|tf32|bf16|fp16  the GPU's GEMMs: fp32 (default), TF32, bf16 or fp16 tensor cores\n"
    "                       (fp32 weights and sums either way; DOPPEL_PRECISION sets the default)\n"
    "  --threads N  --help\n";

static SampleOptions parse_sample(int argc, char **argv) {
    SampleOptions o = {.device = "auto", .users = "all", .per_user = 8, .steps = 20, .batch = 32, .guidance = SAMPLE_GUIDANCE_DEFAULT, .kind = SAMPLER_DPMPP_2M,
                       .timeout_s = 300, .classifier_scale = 1.0};
    enum { O_UNET = 256, O_USERS, O_PER, O_SAMPLER, O_STEPS, O_ETA, O_KARRAS, O_G, O_SEED, O_BATCH, O_OUT, O_CACHE, O_VAE,
           O_NOEMA, O_THREADS, O_TIMEOUT, O_DEVICE, O_PREC, O_CLS, O_CLS_SCALE, O_HELP };
    static const struct option opts[] = {
        {"unet", 1, 0, O_UNET}, {"users", 1, 0, O_USERS}, {"per-user", 1, 0, O_PER}, {"sampler", 1, 0, O_SAMPLER},
        {"steps", 1, 0, O_STEPS}, {"eta", 1, 0, O_ETA}, {"karras", 0, 0, O_KARRAS}, {"guidance", 1, 0, O_G},
        {"seed", 1, 0, O_SEED}, {"batch", 1, 0, O_BATCH}, {"out", 1, 0, O_OUT}, {"cache", 1, 0, O_CACHE},
        {"vae", 1, 0, O_VAE}, {"no-ema", 0, 0, O_NOEMA}, {"threads", 1, 0, O_THREADS}, {"timeout", 1, 0, O_TIMEOUT},
        {"device", 1, 0, O_DEVICE}, {"precision", 1, 0, O_PREC}, {"classifier", 1, 0, O_CLS}, {"classifier-scale", 1, 0, O_CLS_SCALE},
        {"help", 0, 0, O_HELP}, {0, 0, 0, 0}};
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case O_UNET: o.unet = optarg; break;
        case O_USERS: o.users = optarg; break;
        case O_PER: o.per_user = (int)cli_parse_long(TOOL, "--per-user", optarg, 1, 1000000); break;
        case O_SAMPLER: if (sampler_kind_parse(optarg, &o.kind)) cli_usage_error(TOOL, "--sampler must be ddpm, ddim or dpmpp2m"); break;
        case O_STEPS: o.steps = (int)cli_parse_long(TOOL, "--steps", optarg, 1, SCHED_MAX_STEPS); break;
        case O_ETA: o.eta = cli_parse_double(TOOL, "--eta", optarg, 0, 1e3); break;
        case O_KARRAS: o.karras = 1; break;
        case O_G: o.guidance = cli_parse_double(TOOL, "--guidance", optarg, 0, 1e3); break;
        case O_SEED: o.seed = (uint64_t)cli_parse_long(TOOL, "--seed", optarg, 0, (long)(~0UL >> 1)); break;
        case O_BATCH: o.batch = (int)cli_parse_long(TOOL, "--batch", optarg, 1, 65536); break;
        case O_OUT: o.out = optarg; break;
        case O_CACHE: o.cache = optarg; break;
        case O_VAE: o.vae = optarg; break;
        case O_NOEMA: o.no_ema = 1; break;
        case O_THREADS: o.threads = (int)cli_parse_long(TOOL, "--threads", optarg, 1, 1024); break;
        case O_TIMEOUT: o.timeout_s = (int)cli_parse_long(TOOL, "--timeout", optarg, 1, 100000000); break;
        case O_DEVICE: o.device = cli_parse_device(TOOL, optarg); break;
        case O_PREC: o.precision = cli_parse_precision(TOOL, optarg); break;
        case O_CLS: o.classifier = optarg; break;
        case O_CLS_SCALE: o.classifier_scale = cli_parse_double(TOOL, "--classifier-scale", optarg, 0, 1e4), o.scale_given = 1; break;
        case O_HELP: fputs(USAGE_SAMPLE, stdout); exit(EXIT_OK);
        default: cli_usage_error(TOOL, "unknown option for 'sample'");
        }
    }
    if (optind < argc) cli_usage_error(TOOL, "unexpected argument '%s'", argv[optind]);
    if (!o.unet) cli_usage_error(TOOL, "--unet DIR is required");
    if (o.scale_given && !o.classifier) cli_usage_error(TOOL, "--classifier-scale needs --classifier DIR");
    if (!o.out && !o.cache) o.out = "@tcp://127.0.0.1:5556";
    if (o.threads) omp_set_num_threads(o.threads);
    return o;
}

// "all" or a comma-separated list of names / indices -> labels (malloc'd); returns the count
int diffuser_parse_users(const char *spec, const json_t *names, int U, int32_t **out, char *err, size_t errlen) {
    *out = NULL;
    if (!strcmp(spec, "all")) {
        *out = xmalloc((size_t)U * sizeof(int32_t));
        for (int u = 0; u < U; u++) (*out)[u] = u;
        return U;
    }
    int n = 0, cap = 8;
    int32_t *v = xmalloc((size_t)cap * sizeof(int32_t));
    char *copy = strdup(spec), *save = NULL;
    for (char *tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        int found = -1;
        for (size_t i = 0; names && i < json_array_size(names); i++)
            if (json_is_string(json_array_get(names, i)) && !strcmp(json_string_value(json_array_get(names, i)), tok)) found = (int)i;
        if (found < 0) {
            char *end;
            long k = strtol(tok, &end, 10);
            if (*tok && !*end && k >= 0 && k < U) found = (int)k;
        }
        if (found < 0) {
            if (names) errf(err, errlen, "unknown user '%s' (the UNet has %d users: %s, ...)", tok, U,
                            json_string_value(json_array_get(names, 0)));
            else errf(err, errlen, "unknown user '%s' (the UNet has %d users; give label indices 0..%d)", tok, U, U - 1);
            free(copy), free(v);
            return -1;
        }
        if (n == cap) v = xrealloc(v, (size_t)(cap *= 2) * sizeof(int32_t));
        v[n++] = found;
    }
    free(copy);
    if (!n) return free(v), errf(err, errlen, "--users names no user");
    *out = v;
    return n;
}

typedef struct {
    Progress *p;
    int64_t done_before;  // unet-steps x samples of the batches before
    int n;                // samples in this batch
} SampleProgressCtx;

static void on_step(void *user, int step, int steps) {
    SampleProgressCtx *c = user;
    (void)steps;
    progress_update(c->p, c->done_before + (int64_t)step * c->n, NULL);
}

// the frame meta every generated batch carries
json_t *diffuser_sample_meta(const UNetFolder *u, const char *unet, const SampleConfig *sc, int used_ema) {
    json_t *m = json_object();
    json_object_set_new(m, "stage", json_string("diffuser"));
    if (u->users) json_object_set(m, "users", u->users);
    json_t *d = json_object_get(u->config, "doppel");
    json_t *vae = d ? json_object_get(d, "vae") : NULL, *sf = vae ? json_object_get(vae, "scaling_factor") : NULL;
    if (json_is_number(sf)) json_object_set(m, "scaling_factor", sf);
    json_object_set_new(m, "unet", json_string(unet));
    json_t *step = d ? json_object_get(d, "step") : NULL;
    if (step) json_object_set(m, "unet_step", step);
    json_object_set_new(m, "ema", json_boolean(used_ema));
    json_object_set_new(m, "sampler", json_string(sampler_kind_name(sc->sampler.kind)));
    json_object_set_new(m, "steps", json_integer(sc->sampler.steps));
    json_object_set_new(m, "guidance", json_real(sc->guidance));
    if (sc->sampler.kind == SAMPLER_DDIM) json_object_set_new(m, "eta", json_real(sc->sampler.eta));
    if (sc->sampler.kind == SAMPLER_DPMPP_2M) json_object_set_new(m, "karras", json_boolean(sc->sampler.karras));
    return m;
}

int diffuser_sample_main(int argc, char **argv) {
    SampleOptions o = parse_sample(argc, argv);
    char err[512];
    UNetFolder u;
    int used_ema = 0;
    if (unet_folder_load(&u, o.unet, !o.no_ema, &used_ema, err, sizeof(err)))
        return fprintf(stderr, "doppel-diffuser: %s\n", err), EXIT_RUNTIME;
    UNet2DModel *m = &u.model;
    int U = m->cfg.num_class_embeds - 1;
    if (U < 1) return fprintf(stderr, "doppel-diffuser: %s has no class embedding: not a user-conditioned UNet\n", o.unet), EXIT_RUNTIME;
    if (o.vae) {
        VaeFolder v;
        if (vae_folder_load(&v, o.vae, err, sizeof(err))) return fprintf(stderr, "doppel-diffuser: %s\n", err), EXIT_RUNTIME;
        int bad = unet_vae_compatible(&m->cfg, u.users, &v.model.cfg, v.users, err, sizeof(err));
        vae_folder_free(&v);
        if (bad) return fprintf(stderr, "doppel-diffuser: %s and %s do not fit: %s\n", o.unet, o.vae, err), EXIT_RUNTIME;
    }
    int32_t *users;
    int nu = diffuser_parse_users(o.users, u.users, U, &users, err, sizeof(err));
    if (nu < 0) cli_usage_error(TOOL, "--users: %s", err);
    LatentClassifier *cls = NULL;  // classifier guidance
    if (o.classifier) {
        cls = xcalloc(1, sizeof(*cls));
        if (latent_classifier_load(cls, o.classifier, err, sizeof(err))) return fprintf(stderr, "doppel-diffuser: %s\n", err), EXIT_RUNTIME;
        if (latent_classifier_fits_unet(cls, &m->cfg, u.users, &u.sched, err, sizeof(err)))
            return fprintf(stderr, "doppel-diffuser: %s and %s do not fit: %s\n", o.unet, o.classifier, err), EXIT_RUNTIME;
    }
    SampleConfig sc = {.guidance = (float)o.guidance, .classifier = cls, .classifier_scale = (float)o.classifier_scale};
    if (sampler_init(&sc.sampler, &u.sched, o.kind, o.steps, (float)o.eta, o.karras, err, sizeof(err)))
        cli_usage_error(TOOL, "%s", err);
    void *out = NULL;
    if (o.out && !(out = zsock_open(ZMQ_PUSH, o.out, 1, err, sizeof(err))))
        return fprintf(stderr, "doppel-diffuser: %s\n", err), EXIT_RUNTIME;
    int64_t N = (int64_t)nu * o.per_user;
    size_t per = (size_t)m->cfg.in_channels * m->cfg.sample_size * m->cfg.sample_size;
    int32_t *lab = xmalloc((size_t)N * sizeof(int32_t));
    int64_t *seeds = xmalloc((size_t)N * sizeof(int64_t));
    for (int i = 0; i < nu; i++)
        for (int k = 0; k < o.per_user; k++) lab[(int64_t)i * o.per_user + k] = users[i], seeds[(int64_t)i * o.per_user + k] = sample_seed(o.seed, users[i], k);
    float *all = o.cache ? xmalloc((size_t)N * per * sizeof(float)) : NULL;
    float *z = xmalloc((size_t)o.batch * per * sizeof(float));
    json_t *meta = diffuser_sample_meta(&u, o.unet, &sc, used_ema);
    if (cls) {
        json_object_set_new(meta, "classifier", json_string(o.classifier));
        json_object_set_new(meta, "classifier_scale", json_real(o.classifier_scale));
    }
    char cg[600] = "";
    if (cls) snprintf(cg, sizeof(cg), ", classifier guidance %g (%s)", o.classifier_scale, o.classifier);
    fprintf(stderr, "doppel-diffuser: %lld samples (%d users x %d) with %s, %d steps, guidance %g%s, %s weights%s%s\n",
            (long long)N, nu, o.per_user, sampler_kind_name(o.kind), o.steps, o.guidance, cg, used_ema ? "EMA" : "raw",
            out ? ", to " : "", out ? o.out : "");
    int gpu = device_choose(o.device, "doppel-diffuser");
    if (gpu && cls) {
        fprintf(stderr, "doppel-diffuser: classifier guidance runs on the CPU only (for now): sampling on the CPU\n");
        gpu = 0;
    }
    if (gpu) fprintf(stderr, "doppel-diffuser: sampling on %s\n", cuda_device_name());
    Rng rng;
    rng_seed(&rng, o.seed);
    Compute cp;
    compute_init(&cp, &m->ps, &rng, gpu);
    compute_precision(&cp, o.precision, "doppel-diffuser");
    Progress p;
    progress_start(&p, "sample", N * o.steps, "sample-step");  // moves during long batches
    int rc = EXIT_OK;
    int64_t frames = 0, sent = 0;
    double t0 = cli_now();
    for (int64_t n0 = 0; n0 < N && !zsock_interrupted(); n0 += o.batch) {
        int n = (int)(N - n0 < o.batch ? N - n0 : o.batch);
        SampleProgressCtx pc = {&p, n0 * o.steps, n};
        diffusion_sample(&cp.ctx, m, &u.sched, &sc, lab + n0, seeds + n0, n, z, on_step, &pc);
        if (all) memcpy(all + n0 * per, z, (size_t)n * per * sizeof(float));
        if (out) {
            Frame fr;
            frame_init(&fr, FRAME_BATCH, "diffuser", (uint64_t)frames);
            fr.has_total = 1, fr.total = (uint64_t)N;
            frame_set_meta(&fr, meta);
            frame_add_tensor(&fr, WIRE_LATENT, WDT_F32, 4, (int64_t[]){n, m->cfg.in_channels, m->cfg.sample_size, m->cfg.sample_size}, z);
            frame_add_tensor(&fr, WIRE_LABEL, WDT_I32, 1, (int64_t[]){n}, lab + n0);
            frame_add_tensor(&fr, WIRE_SEED, WDT_I64, 1, (int64_t[]){n}, seeds + n0);
            int bad = zsock_send_frame(out, &fr, o.timeout_s * 1000, err, sizeof(err));
            frame_release(&fr);
            if (bad) {
                if (!zsock_interrupted()) fprintf(stderr, "doppel-diffuser: no decoder took batch %lld within %d s (%s): is doppel-decoder running and connected to %s?\n",
                                                  (long long)frames, o.timeout_s, err, o.out), rc = EXIT_RUNTIME;
                break;
            }
        }
        frames++, sent += n;
    }
    double secs = cli_now() - t0;
    progress_finish(&p, NULL);
    if (out && rc == EXIT_OK && !zsock_interrupted()) {
        Frame fr;
        frame_init(&fr, FRAME_END, "diffuser", (uint64_t)frames);
        fr.has_total = 1, fr.total = (uint64_t)sent;
        if (zsock_send_frame(out, &fr, o.timeout_s * 1000, err, sizeof(err))) fprintf(stderr, "doppel-diffuser: end not sent: %s\n", err);
        frame_release(&fr);
        int linger = 600000;
        zmq_setsockopt(out, ZMQ_LINGER, &linger, sizeof(linger));
    }
    if (all && rc == EXIT_OK && sent == N) {
        char *us = u.users ? json_dumps(u.users, JSON_COMPACT) : strdup("[]");
        const char *kv[] = {"users", us, "unet", o.unet, "format", "doppel-latent-cache"};
        StEntry e[3] = {{"latent", ST_F32, 4, {N, m->cfg.in_channels, m->cfg.sample_size, m->cfg.sample_size}, all},
                        {"label", ST_I32, 1, {N}, lab},
                        {"seed", ST_I64, 1, {N}, seeds}};
        if (st_save(o.cache, e, 3, kv, 3, err, sizeof(err))) fprintf(stderr, "doppel-diffuser: %s\n", err), rc = EXIT_RUNTIME;
        free(us);
    }
    fprintf(stderr, "doppel-diffuser: generated %lld samples in %.1f s (%.2f samples/s)%s\n", (long long)sent, secs,
            secs > 0 ? sent / secs : 0.0, zsock_interrupted() ? " (interrupted)" : "");
    json_decref(meta);
    free(lab), free(seeds), free(all), free(z), free(users);
    compute_free(&cp);
    zsock_close(&out);
    zsock_term();
    if (cls) latent_classifier_free(cls), free(cls);
    unet_folder_free(&u);
    return rc;
}

// doppel-decoder: latents to spectrograms. Reads `batch` frames with a `latent` tensor (N, 4, h, w),
// decodes image = clamp(vae_decode(latent / scaling_factor), -1, 1) and writes each sample as a PNG
// in the dataset layout DIR/<user>/<seed>.png and/or publishes an `image` frame per batch.
#include <getopt.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

#include "check.h"
#include "cli/cli.h"
#include "image/image.h"
#include "io/fileio.h"
#include "models/vae_folder.h"
#include "net/zsock.h"
#include "wire/frame.h"

#define TOOL "decoder"
#define MAX_SIDE 4096  // latent h, w accepted when the VAE does not say its resolution

static const char *USAGE =
    "usage: doppel-decoder --vae DIR --in EP (--png DIR | --pub EP) [options]\n"
    "\n"
    "examples:\n"
    "  # generated latents -> PNGs in the dataset layout out/gen/ID_<n>/<seed>.png\n"
    "  doppel-decoder --vae models/vae --in tcp://127.0.0.1:5556 --png out/gen\n"
    "  # ... and publish the images for other tools (doppel-cat --sub, a plotting script)\n"
    "  doppel-decoder --vae models/vae --in tcp://127.0.0.1:5556 --pub tcp://127.0.0.1:5557\n"
    "  doppel-cat --in tcp://127.0.0.1:5557 --sub\n"
    "  # two decoders sharing one stream: the end frame reaches only one of them, so both stop\n"
    "  # after 10 s without frames (once they have decoded something)\n"
    "  doppel-decoder --vae models/vae --in tcp://127.0.0.1:5556 --png out/gen --timeout 10 &\n"
    "  doppel-decoder --vae models/vae --in tcp://127.0.0.1:5556 --png out/gen --timeout 10\n"
    "\n"
    "  --vae DIR            the VAE folder (diffusers AutoencoderKL: config.json + safetensors)\n"
    "  --in EP              latent stream (PULL; bare: connect, the producer binds; '@' binds)\n"
    "  --png DIR            write DIR/<user>/<seed>.png (user from the frame's meta users[label],\n"
    "                       else the VAE's users, else ID_<label+1>; <stream>-<seq>-<i>.png without\n"
    "                       a seed); each PNG carries an iTXt 'generation' chunk (JSON: user, label,\n"
    "                       seed, model, sampler, steps, guidance, unet)\n"
    "  --pub EP             publish an 'image' frame (N,C,H,W) f32 in [-1,1] per input batch, label\n"
    "                       and seed passed through, then an 'end' frame (PUB; bare: bind). A PUB\n"
    "                       drops frames for subscribers that are not connected or fall behind.\n"
    "  --colormap jet|viridis|gray  how 1-channel images are drawn (default: the VAE's training\n"
    "                       data colour map, config.json doppel.colormap, else jet)\n"
    "  --bits 8|16          PNG bits per sample (8 for colour, 16 for gray; 16 only with gray)\n"
    "  --batch-limit N      decode at most N samples at once, bounding memory (16)\n"
    "  --timeout S          exit 0 after S s without frames once something was decoded (0: never)\n"
    "  --threads N          compute threads (all cores)\n"
    "  --device cpu|cuda|auto  where the VAE decoder runs (auto: the GPU when there is one)\n"
    "  --help, --version\n"
    "\n"
    "end of stream: an 'end' frame announces the total; the decoder exits once that many samples\n"
    "have arrived (decoded or skipped). Several decoders may PULL from one stream (PUSH round-robins\n"
    "batches between them), but the producer's single 'end' frame reaches only one of them: give\n"
    "every decoder --timeout S, so each stops S seconds after its last frame.\n"
    "Frames without a latent, latents whose shape does not fit the VAE and malformed frames are\n"
    "reported on stderr and skipped; the decoder keeps serving. Exit: 0 done (or Ctrl-C),\n"
    "1 runtime error (VAE folder, sockets, a PNG that could not be written), 2 usage error.\n";

typedef struct {
    const char *vae, *in, *png, *pub, *device;
    int cmap_given, bits, batch_limit, timeout_s, threads;
    Colormap cmap;
} Options;

static Options parse_args(int argc, char **argv) {
    Options o = {.batch_limit = 16, .device = "auto"};
    enum { O_VAE = 256, O_IN, O_PNG, O_PUB, O_CMAP, O_BITS, O_BLIM, O_TIMEOUT, O_THREADS, O_DEVICE, O_HELP, O_VERSION };
    static const struct option opts[] = {
        {"vae", 1, 0, O_VAE}, {"in", 1, 0, O_IN}, {"png", 1, 0, O_PNG}, {"pub", 1, 0, O_PUB},
        {"colormap", 1, 0, O_CMAP}, {"bits", 1, 0, O_BITS}, {"batch-limit", 1, 0, O_BLIM},
        {"timeout", 1, 0, O_TIMEOUT}, {"threads", 1, 0, O_THREADS}, {"device", 1, 0, O_DEVICE},
        {"help", 0, 0, O_HELP}, {"version", 0, 0, O_VERSION}, {0, 0, 0, 0}};
    int c;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case O_VAE: o.vae = optarg; break;
        case O_IN: o.in = optarg; break;
        case O_PNG: o.png = optarg; break;
        case O_PUB: o.pub = optarg; break;
        case O_CMAP:
            if (colormap_parse(optarg, &o.cmap)) cli_usage_error(TOOL, "--colormap must be jet, viridis or gray, not '%s'", optarg);
            o.cmap_given = 1;
            break;
        case O_BITS:
            o.bits = (int)cli_parse_long(TOOL, "--bits", optarg, 8, 16);
            if (o.bits != 8 && o.bits != 16) cli_usage_error(TOOL, "--bits must be 8 or 16, not '%s'", optarg);
            break;
        case O_BLIM: o.batch_limit = (int)cli_parse_long(TOOL, "--batch-limit", optarg, 1, 65536); break;
        case O_TIMEOUT: o.timeout_s = (int)cli_parse_long(TOOL, "--timeout", optarg, 0, 1 << 30); break;
        case O_THREADS: o.threads = (int)cli_parse_long(TOOL, "--threads", optarg, 1, 1024); break;
        case O_DEVICE: o.device = cli_parse_device(TOOL, optarg); break;
        case O_HELP: fputs(USAGE, stdout); exit(EXIT_OK);
        case O_VERSION: cli_print_version(TOOL); exit(EXIT_OK);
        default: cli_usage_error(TOOL, "unknown option");
        }
    }
    if (optind < argc) cli_usage_error(TOOL, "unexpected argument '%s'", argv[optind]);
    if (!o.vae) cli_usage_error(TOOL, "--vae DIR is required (the VAE folder the latents were encoded with)");
    if (!o.in) cli_usage_error(TOOL, "--in EP is required (the latent stream, e.g. tcp://127.0.0.1:5556)");
    if (!o.png && !o.pub) cli_usage_error(TOOL, "give --png DIR and/or --pub EP: where the images should go");
    if (o.bits == 16 && o.cmap_given && o.cmap != CMAP_GRAY)
        cli_usage_error(TOOL, "--bits 16 is for gray PNGs; colour PNGs are 8-bit (drop --bits or use --colormap gray)");
    return o;
}

typedef struct {
    Options o;
    VaeFolder vae;
    Compute cp;  // the VAE's parameters and activations on the chosen device
    Rng rng;
    int lat_h, lat_w;  // latent size the VAE expects (0: any)
    Colormap cmap;     // for 1-channel PNGs
    int bits;          // PNG bits
    json_t *model;     // "model" of the generation chunk
    void *in, *pub;
    int64_t decoded, accounted, frames, published, skipped_frames, pngs, png_failed;
    double busy_s;  // time spent decoding and writing (not waiting for frames)
} Decoder;

// ---- setup ----

// the latent h, w the VAE takes: config.json sample_size (or doppel.resolution) / 2^(blocks-1)
static void expected_latent(Decoder *d) {
    json_t *res = json_object_get(d->vae.config, "sample_size");
    json_t *dp = vae_folder_doppel(&d->vae);
    if (!json_is_integer(res) && dp) res = json_object_get(dp, "resolution");
    if (!json_is_integer(res) || json_integer_value(res) <= 0) return;
    int f = vae_downscale(&d->vae.model.cfg), r = (int)json_integer_value(res);
    d->lat_h = d->lat_w = r / f;
}

// how PNGs are drawn: the VAE's colour map unless --colormap, 16 bits for gray, 8 for colour
static void choose_png_format(Decoder *d) {
    int C = d->vae.model.cfg.out_channels;
    d->cmap = d->o.cmap_given ? d->o.cmap : d->vae.cmap;
    int gray = C == 1 && d->cmap == CMAP_GRAY;
    d->bits = d->o.bits ? d->o.bits : gray ? 16 : 8;
    if (!d->o.png) return;
    if (C != 1 && C != 3)
        cli_usage_error(TOOL, "%s decodes to %d channels; PNGs need 1 or 3 (use --pub instead of --png)", d->o.vae, C);
    if (d->bits == 16 && !gray)
        cli_usage_error(TOOL, "--bits 16 is for gray PNGs, but %s's images are drawn %s (add --colormap gray)", d->o.vae,
                        C == 3 ? "as RGB" : colormap_name(d->cmap));
}

static json_t *model_json(const Decoder *d) {
    json_t *m = json_pack("{s:s}", "vae", d->o.vae);
    json_t *sf = json_object_get(d->vae.config, "scaling_factor");  // as config.json says it
    json_object_set_new(m, "scaling_factor", json_is_number(sf) ? json_deep_copy(sf) : json_real(d->vae.model.cfg.scaling_factor));
    json_t *dp = vae_folder_doppel(&d->vae);
    const char *keys[] = {"preset", "step"};
    for (int i = 0; i < 2; i++)
        if (dp && json_object_get(dp, keys[i])) json_object_set(m, keys[i], json_object_get(dp, keys[i]));
    return m;
}

// ---- one batch ----

// the latent fits the VAE; otherwise err says how it differs
static int check_latent(const Decoder *d, const Frame *f, const WireTensor *t, char *err, size_t errlen) {
    const VaeConfig *c = &d->vae.model.cfg;
    int64_t N = t->shape[0], C = t->shape[1], h = t->shape[2], w = t->shape[3];
    const char *s = f->stream;
    unsigned long long q = (unsigned long long)f->seq;
    if (N < 1 || h < 1 || w < 1)
        return errf(err, errlen, "batch %s #%llu: latent shape (%lld,%lld,%lld,%lld) is empty", s, q, (long long)N, (long long)C,
                    (long long)h, (long long)w);
    if (C != c->latent_channels)
        return errf(err, errlen, "batch %s #%llu: latent has %lld channels, %s has latent_channels %d", s, q, (long long)C,
                    d->o.vae, c->latent_channels);
    if (d->lat_h && (h != d->lat_h || w != d->lat_w))
        return errf(err, errlen, "batch %s #%llu: latent is %lldx%lld, %s decodes %dx%d latents (sample_size %d / %d)", s, q,
                    (long long)h, (long long)w, d->o.vae, d->lat_h, d->lat_w, d->lat_h * vae_downscale(c), vae_downscale(c));
    if (h > MAX_SIDE || w > MAX_SIDE)
        return errf(err, errlen, "batch %s #%llu: latent %lldx%lld is larger than %dx%d", s, q, (long long)h, (long long)w,
                    MAX_SIDE, MAX_SIDE);
    int f2 = vae_downscale(c);
    double bytes = (double)N * c->out_channels * (double)(h * f2) * (double)(w * f2) * sizeof(float);
    if (bytes > (double)WIRE_MAX_FRAME_BYTES)
        return errf(err, errlen, "batch %s #%llu: %lld latents decode to %.0f MB of images, over the %zu MB frame limit; "
                    "send smaller batches", s, q, (long long)N, bytes / 1048576, WIRE_MAX_FRAME_BYTES >> 20);
    return 0;
}

// out (N, C, H, W) = clamp(vae_decode(latent / scaling_factor), -1, 1), batch_limit samples at a time
static float *decode_latents(Decoder *d, const WireTensor *t, int *C, int *H, int *W) {
    int N = (int)t->shape[0], lc = (int)t->shape[1], h = (int)t->shape[2], w = (int)t->shape[3];
    int f = vae_downscale(&d->vae.model.cfg);
    *C = d->vae.model.cfg.out_channels, *H = h * f, *W = w * f;
    size_t per_in = (size_t)lc * h * w, per_out = (size_t)*C * *H * *W;
    float *out = xmalloc((size_t)N * per_out * sizeof(float));
    float sf = d->vae.model.cfg.scaling_factor;
    float *zh = xmalloc((size_t)(N < d->o.batch_limit ? N : d->o.batch_limit) * per_in * sizeof(float));
    for (int n0 = 0; n0 < N; n0 += d->o.batch_limit) {
        int n = N - n0 < d->o.batch_limit ? N - n0 : d->o.batch_limit;
        arena_reset(&d->cp.arena);
        memcpy(zh, (const char *)t->data + (size_t)n0 * per_in * sizeof(float), (size_t)n * per_in * sizeof(float));
        for (size_t i = 0; i < (size_t)n * per_in; i++) zh[i] = zh[i] / sf;
        Tensor z = ctx_tensor(&d->cp.ctx, n, lc, h, w);  // [n, 4, h, w]
        ctx_put(&d->cp.ctx, z.d, zh, (size_t)n * per_in * sizeof(float));
        Tensor x = vae_decode(&d->cp.ctx, &d->vae.model, z);  // [n, C, H, W]
        CHECK(x.C == *C && x.H == *H && x.W == *W, "vae_decode gave (%d,%d,%d), expected (%d,%d,%d)", x.C, x.H, x.W, *C, *H, *W);
        float *o = out + (size_t)n0 * per_out;
        ctx_get(&d->cp.ctx, o, x.d, (size_t)n * per_out * sizeof(float));
        for (size_t i = 0; i < (size_t)n * per_out; i++) o[i] = o[i] < -1.0f ? -1.0f : o[i] > 1.0f ? 1.0f : o[i];
    }
    free(zh);
    return out;
}

// a user name usable as a folder name (from outside: no '/', not '.' or '..', printable)
static const char *safe_name(const json_t *v) {
    const char *s = json_string_value(v);
    if (!s || !*s || strlen(s) > 128 || !strcmp(s, ".") || !strcmp(s, "..")) return NULL;
    for (const char *p = s; *p; p++)
        if (*p == '/' || *p == '\\' || (unsigned char)*p < 32) return NULL;
    return s;
}

static const char *user_name(const Decoder *d, const Frame *f, int has_label, int32_t label, char *buf, size_t n) {
    if (!has_label) return "unlabelled";
    const char *s = NULL;
    if (label >= 0) {
        json_t *fu = f->meta ? json_object_get(f->meta, "users") : NULL;
        s = safe_name(json_array_get(fu, (size_t)label));
        if (!s) s = safe_name(json_array_get(d->vae.users, (size_t)label));
    }
    if (s) return s;
    snprintf(buf, n, "ID_%lld", (long long)label + 1);
    return buf;
}

static char *generation_text(const Decoder *d, const Frame *f, const char *user, int has_label, int32_t label, int has_seed,
                             int64_t seed, int index) {
    json_t *g = json_pack("{s:s}", "user", user);
    if (has_label) json_object_set_new(g, "label", json_integer(label));
    if (has_seed) json_object_set_new(g, "seed", json_integer(seed));
    else json_object_set_new(g, "sample", json_pack("{s:s, s:I, s:i}", "stream", f->stream, "seq", (json_int_t)f->seq, "index", index));
    json_object_set(g, "model", d->model);
    const char *keys[] = {"sampler", "steps", "guidance", "unet"};
    for (int i = 0; i < 4; i++) {
        json_t *v = f->meta ? json_object_get(f->meta, keys[i]) : NULL;
        if (v) json_object_set(g, keys[i], v);
    }
    if (d->vae.model.cfg.out_channels == 1) json_object_set_new(g, "colormap", json_string(colormap_name(d->cmap)));
    char *s = json_dumps(g, JSON_COMPACT);
    json_decref(g);
    return s;
}

static void write_pngs(Decoder *d, const Frame *f, float *img, int N, int C, int H, int W) {
    const WireTensor *lab = frame_tensor(f, WIRE_LABEL), *sd = frame_tensor(f, WIRE_SEED);
    char err[512], ubuf[32], dir[4096], path[8192];
    size_t per = (size_t)C * H * W;
    for (int n = 0; n < N; n++) {
        int32_t label = -1;
        int64_t seed = 0;
        if (lab) memcpy(&label, (const char *)lab->data + 4 * (size_t)n, 4);
        if (sd) memcpy(&seed, (const char *)sd->data + 8 * (size_t)n, 8);
        const char *user = user_name(d, f, lab != NULL, label, ubuf, sizeof(ubuf));
        snprintf(dir, sizeof(dir), "%s/%s", d->o.png, user);
        if (sd) snprintf(path, sizeof(path), "%s/%lld.png", dir, (long long)seed);
        else snprintf(path, sizeof(path), "%s/%s-%llu-%d.png", dir, f->stream, (unsigned long long)f->seq, n);
        Image im = {C, H, W, xmalloc(per * sizeof(float)), d->bits}, rgb = {0};
        for (size_t i = 0; i < per; i++) im.data[i] = 0.5f * (img[(size_t)n * per + i] + 1.0f);  // [-1, 1] -> [0, 1]
        const Image *out = &im;
        if (C == 1 && d->cmap != CMAP_GRAY) {
            CHECK(colormap_render(d->cmap, &im, &rgb) == 0, "colormap_render failed for a %dx%d image", H, W);
            out = &rgb;
        }
        char *gen = generation_text(d, f, user, lab != NULL, label, sd != NULL, seed, n);
        if (mkdir_p(dir, err, sizeof(err)) || image_write_png(path, out, d->bits, gen, err, sizeof(err))) {
            fprintf(stderr, "doppel-decoder: %s\n", err);
            d->png_failed++;
        } else {
            d->pngs++;
        }
        free(gen);
        image_free(&rgb);
        free(im.data);
    }
}

static void publish(Decoder *d, const Frame *f, const float *img, int N, int C, int H, int W) {
    Frame out;
    frame_init(&out, FRAME_BATCH, "decoder", (uint64_t)d->published);
    if (f->has_total) out.has_total = 1, out.total = f->total;
    json_t *meta = f->meta ? json_deep_copy(f->meta) : json_object();
    json_object_set_new(meta, "stage", json_string("decoder"));
    json_object_set_new(meta, "vae", json_string(d->o.vae));
    frame_set_meta(&out, meta);
    json_decref(meta);
    frame_add_tensor(&out, WIRE_IMAGE, WDT_F32, 4, (int64_t[]){N, C, H, W}, img);
    const WireTensor *lab = frame_tensor(f, WIRE_LABEL), *sd = frame_tensor(f, WIRE_SEED);
    if (lab) frame_add_tensor(&out, WIRE_LABEL, WDT_I32, 1, lab->shape, lab->data);
    if (sd) frame_add_tensor(&out, WIRE_SEED, WDT_I64, 1, sd->shape, sd->data);
    char err[512];
    if (zsock_send_frame(d->pub, &out, 10000, err, sizeof(err))) fprintf(stderr, "doppel-decoder: publish failed: %s\n", err);
    else d->published++;
    frame_release(&out);
}

static void skip(Decoder *d, const Frame *f, const char *why) {
    fprintf(stderr, "doppel-decoder: skipped %s\n", why);
    d->skipped_frames++;
    const WireTensor *t = f ? frame_tensor(f, WIRE_LATENT) : NULL;
    if (t && t->ndim >= 1 && t->shape[0] > 0) d->accounted += t->shape[0];  // announced, arrived, not decodable
}

static void handle_batch(Decoder *d, const Frame *f) {
    char err[512], why[640];
    const WireTensor *lat = frame_tensor(f, WIRE_LATENT);
    if (frame_check_batch(f, err, sizeof(err))) {
        snprintf(why, sizeof(why), "a bad batch: %s", err);
        skip(d, f, why);
        return;
    }
    if (!lat) {
        snprintf(why, sizeof(why), "batch %s #%llu: it has no 'latent' tensor (%s); the decoder takes latents", f->stream,
                 (unsigned long long)f->seq, frame_tensor(f, WIRE_IMAGE) ? "an image frame" : "nothing to decode");
        skip(d, f, why);
        return;
    }
    if (check_latent(d, f, lat, err, sizeof(err))) {
        skip(d, f, err);
        return;
    }
    double t0 = cli_now();
    int N = (int)lat->shape[0], C, H, W;
    float *img = decode_latents(d, lat, &C, &H, &W);
    if (d->o.png) write_pngs(d, f, img, N, C, H, W);
    if (d->pub) publish(d, f, img, N, C, H, W);
    free(img);
    d->decoded += N, d->accounted += N;
    d->busy_s += cli_now() - t0;
}

// ---- the serving loop ----

static void send_end(Decoder *d) {
    Frame f;
    frame_init(&f, FRAME_END, "decoder", (uint64_t)d->published);
    f.has_total = 1, f.total = (uint64_t)d->decoded;
    json_t *meta = json_pack("{s:s, s:I, s:I, s:b}", "stage", "decoder", "frames", (json_int_t)d->published, "skipped_frames",
                             (json_int_t)d->skipped_frames, "interrupted", zsock_interrupted());
    frame_set_meta(&f, meta);
    json_decref(meta);
    // a PUB never blocks, so this goes out even after Ctrl-C (zsock_send_frame would see the flag and give up)
    char err[512];
    void *buf = NULL;
    size_t len = 0;
    if (frame_encode(&f, &buf, &len, err, sizeof(err)) == 0 && zmq_send(d->pub, buf, len, ZMQ_DONTWAIT) != (int)len)
        fprintf(stderr, "doppel-decoder: could not publish the end frame: %s\n", zmq_strerror(zmq_errno()));
    free(buf);
    frame_release(&f);
}

static void serve(Decoder *d) {
    Progress p;
    progress_start(&p, "decode", 0, "img");
    int ended = 0;
    int64_t expect = 0;
    double last = cli_now();
    char err[512], extra[64];
    while (!zsock_interrupted()) {
        Received r = {0};
        int got = zsock_recv_frame(d->in, &r, NULL, 200, err, sizeof(err));
        if (got < 0) {
            skip(d, NULL, err);
            continue;
        }
        if (!got) {
            if (d->o.timeout_s && d->decoded && cli_now() - last > d->o.timeout_s) {
                fprintf(stderr, "doppel-decoder: no frame for %d s; stopping (--timeout)\n", d->o.timeout_s);
                break;
            }
            continue;
        }
        last = cli_now();
        const Frame *f = &r.frame;
        d->frames++;
        if (f->kind == FRAME_BATCH) {
            if (f->has_total && !p.total) p.total = (int64_t)f->total;
            handle_batch(d, f);
        } else if (f->kind == FRAME_END) {
            ended = 1;
            expect = f->has_total ? (int64_t)f->total : d->accounted;
            if (!p.total) p.total = expect;
        } else {  // an upstream error is shown with its meta (the producer's message)
            char why[512], *m = f->meta ? json_dumps(f->meta, JSON_COMPACT) : NULL;
            snprintf(why, sizeof(why), "a '%s' frame from %s%s%.300s%s", frame_kind_name(f->kind), f->stream, m ? " (" : "",
                     m ? m : "", m ? ")" : ": the decoder takes batch and end frames");
            free(m);
            skip(d, NULL, why);
        }
        received_release(&r);
        snprintf(extra, sizeof(extra), "%lld frames", (long long)d->frames);
        progress_update(&p, d->decoded, extra);
        if (ended && d->accounted >= expect) break;
    }
    progress_finish(&p, NULL);
    if (ended && d->decoded < expect)
        fprintf(stderr, "doppel-decoder: the stream announced %lld samples; %lld decoded here%s\n", (long long)expect,
                (long long)d->decoded, d->accounted >= expect ? " (the rest were in skipped frames)"
                                       : " (the rest went to parallel decoders, or never came)");
}

int main(int argc, char **argv) {
    Decoder d = {.o = parse_args(argc, argv)};
    if (d.o.threads) omp_set_num_threads(d.o.threads);
    zsock_install_signals();
    char err[1024];
    if (vae_folder_load(&d.vae, d.o.vae, err, sizeof(err))) {
        fprintf(stderr, "doppel-decoder: cannot load the VAE: %s\n", err);
        return EXIT_RUNTIME;
    }
    expected_latent(&d);
    choose_png_format(&d);
    d.model = model_json(&d);
    int rc = EXIT_OK;
    if (d.o.png && mkdir_p(d.o.png, err, sizeof(err))) {
        fprintf(stderr, "doppel-decoder: %s\n", err);
        rc = EXIT_RUNTIME;
    }
    // bind the publisher before connecting the input, so subscribers can join before frames flow
    if (rc == EXIT_OK && d.o.pub && !(d.pub = zsock_open(ZMQ_PUB, d.o.pub, 1, err, sizeof(err)))) {
        fprintf(stderr, "doppel-decoder: --pub: %s\n", err);
        rc = EXIT_RUNTIME;
    }
    if (rc == EXIT_OK && !(d.in = zsock_open(ZMQ_PULL, d.o.in, 0, err, sizeof(err)))) {
        fprintf(stderr, "doppel-decoder: --in: %s\n", err);
        rc = EXIT_RUNTIME;
    }
    if (rc == EXIT_OK) {
        const VaeConfig *c = &d.vae.model.cfg;
        int f = vae_downscale(c);
        char shapes[96] = "(N, %d, h, w) -> images (N, %d, %dh, %dw)";
        if (d.lat_h)
            snprintf(shapes, sizeof(shapes), "(N, %d, %d, %d) -> images (N, %d, %d, %d)", c->latent_channels, d.lat_h, d.lat_w,
                     c->out_channels, d.lat_h * f, d.lat_w * f);
        else
            snprintf(shapes, sizeof(shapes), "(N, %d, h, w) -> images (N, %d, %dh, %dw)", c->latent_channels, c->out_channels, f, f);
        char bound[256] = "";
        if (d.pub && zsock_last_endpoint(d.pub, bound, sizeof(bound))) snprintf(bound, sizeof(bound), "%s", d.o.pub);
        fprintf(stderr, "doppel-decoder: %s: latents %s, scaling_factor %g; %s%s%s%s%s\n", d.o.vae, shapes,
                (double)c->scaling_factor, d.o.in, d.o.png ? " -> PNGs in " : "", d.o.png ? d.o.png : "",
                d.pub ? " -> published on " : "", bound);
        int gpu = device_choose(d.o.device, "doppel-decoder");
        if (gpu) fprintf(stderr, "doppel-decoder: decoding on %s\n", cuda_device_name());
        rng_seed(&d.rng, 0);
        compute_init(&d.cp, &d.vae.model.ps, &d.rng, gpu);
        serve(&d);
        if (d.pub) send_end(&d);
        double dt = d.busy_s;
        fprintf(stderr, "doppel-decoder: decoded %lld samples in %.2f s of work (%.1f img/s); %lld PNGs written%s; %lld "
                "frames published; %lld frames skipped%s\n", (long long)d.decoded, dt, dt > 0 ? d.decoded / dt : 0.0,
                (long long)d.pngs, d.png_failed ? ", some failed (see above)" : "", (long long)d.published,
                (long long)d.skipped_frames, zsock_interrupted() ? " (interrupted)" : "");
        if (d.png_failed) rc = EXIT_RUNTIME;
        compute_free(&d.cp);
    }
    json_decref(d.model);
    zsock_close(&d.in);
    zsock_close(&d.pub);
    zsock_term();
    vae_folder_free(&d.vae);
    return rc;
}

// doppel-cat: receives any doppel stream and prints it, writes its images as PNGs, forwards it
// (a fan-out worker), or counts it (the fan-in sink that tells workers to stop).
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

#include "check.h"
#include "cli/cli.h"
#include "image/image.h"
#include "io/fileio.h"
#include "net/zsock.h"
#include "wire/frame.h"

#define TOOL "cat"

static const char *USAGE =
    "usage: doppel-cat --in EP [options]\n"
    "\n"
    "examples:\n"
    "  doppel-cat --in '>tcp://127.0.0.1:5555'                      # one line per frame + a summary\n"
    "  doppel-cat --in '>tcp://127.0.0.1:5555' --png out/ --colormap jet   # images as PNGs\n"
    "  # fan-out/fan-in: N workers forward to one sink, which stops them at the end of the stream\n"
    "  doppel-cat --in '>tcp://127.0.0.1:5555' --forward '>tcp://127.0.0.1:5556' --control '>tcp://127.0.0.1:5557'\n"
    "  doppel-cat --in @tcp://127.0.0.1:5556 --sink --control @tcp://127.0.0.1:5557 --seeds seeds.txt\n"
    "\n"
    "  --in EP            stream to read (bare: connect; '@' binds, '>' connects)\n"
    "  --sub              read with SUB (a published stream, e.g. doppel-decoder --pub) instead of PULL\n"
    "  --png DIR          write every image tensor as DIR/ID_<n>/<seed>.png\n"
    "  --colormap gray|jet|viridis  colours for 1-channel images (gray)\n"
    "  --forward EP       worker: pass every frame on (PUSH); stop on the control channel's end\n"
    "  --sink             fan-in: count samples; at the end of the stream publish end on --control\n"
    "  --control EP       the kill channel (sink: PUB, binds by default; worker: SUB, connects)\n"
    "  --seeds FILE       write every received seed, one per line (checks exactly-once delivery)\n"
    "  --quiet            no line per frame   --timeout S  give up after S s without frames (0: never)\n"
    "  --help, --version\n";

typedef struct {
    const char *in, *png, *forward, *control, *seeds;
    int sub, sink, quiet, timeout_s;
    Colormap cmap;
} Options;

static void write_pngs(const Options *o, const Frame *f) {
    const WireTensor *img = frame_tensor(f, WIRE_IMAGE), *lab = frame_tensor(f, WIRE_LABEL), *sd = frame_tensor(f, WIRE_SEED);
    if (!img || img->ndim != 4 || img->dtype != WDT_F32) return;
    int N = (int)img->shape[0], C = (int)img->shape[1], H = (int)img->shape[2], W = (int)img->shape[3];
    json_t *users = f->meta ? json_object_get(f->meta, "users") : NULL;
    float *all = xmalloc(img->numel * sizeof(float) + 1);
    wire_tensor_f32(all, img);
    char err[512], dir[4096], path[8192];
    for (int n = 0; n < N; n++) {
        int32_t label = -1;
        int64_t seed = n;
        if (lab && lab->dtype == WDT_I32 && lab->numel == (size_t)N) memcpy(&label, (const char *)lab->data + 4 * n, 4);
        if (sd && sd->dtype == WDT_I64 && sd->numel == (size_t)N) memcpy(&seed, (const char *)sd->data + 8 * n, 8);
        const char *uname = label >= 0 && json_array_get(users, (size_t)label) ? json_string_value(json_array_get(users, (size_t)label)) : NULL;
        if (uname) snprintf(dir, sizeof(dir), "%s/%s", o->png, uname);
        else snprintf(dir, sizeof(dir), "%s/ID_%d", o->png, label + 1);
        if (mkdir_p(dir, err, sizeof(err))) {
            fprintf(stderr, "doppel-cat: %s\n", err);
            continue;
        }
        Image im = {C, H, W, all + (size_t)n * C * H * W, 8}, rgb = {0};
        for (size_t i = 0; i < (size_t)C * H * W; i++) im.data[i] = 0.5f * (im.data[i] + 1.0f);
        const Image *w = &im;
        if (C == 1 && o->cmap != CMAP_GRAY && !colormap_render(o->cmap, &im, &rgb)) w = &rgb;
        snprintf(path, sizeof(path), "%s/%lld.png", dir, (long long)seed);
        char *gen = f->meta ? json_dumps(f->meta, JSON_COMPACT) : NULL;
        if (w->C == 1 || w->C == 3) {
            if (image_write_png(path, w, w->C == 1 ? 16 : 8, gen, err, sizeof(err))) fprintf(stderr, "doppel-cat: %s\n", err);
        } else {
            fprintf(stderr, "doppel-cat: %d-channel images cannot be written as PNG\n", w->C);
        }
        free(gen);
        image_free(&rgb);
    }
    free(all);
}

static void print_frame(const Frame *f) {
    printf("%s seq=%llu", frame_kind_name(f->kind), (unsigned long long)f->seq);
    if (f->has_total) printf(" total=%llu", (unsigned long long)f->total);
    printf(" stream=%s", f->stream);
    for (int i = 0; i < f->n_tensors; i++) {
        const WireTensor *t = &f->tensors[i];
        printf(" %s%s(", t->name, wire_dtype_name(t->dtype));
        for (int d = 0; d < t->ndim; d++) printf(d ? ",%lld" : "%lld", (long long)t->shape[d]);
        printf(")");
    }
    json_t *stage = f->meta ? json_object_get(f->meta, "stage") : NULL;
    if (json_is_string(stage)) printf(" stage=%s", json_string_value(stage));
    printf("\n");
    fflush(stdout);
}

int main(int argc, char **argv) {
    Options o = {.cmap = CMAP_GRAY};
    static const struct option opts[] = {{"in", 1, 0, 'i'}, {"sub", 0, 0, 'S'}, {"png", 1, 0, 'p'}, {"colormap", 1, 0, 'c'},
                                         {"forward", 1, 0, 'f'}, {"sink", 0, 0, 'k'}, {"control", 1, 0, 'C'}, {"seeds", 1, 0, 's'},
                                         {"quiet", 0, 0, 'q'}, {"timeout", 1, 0, 't'}, {"help", 0, 0, 'h'}, {"version", 0, 0, 'V'},
                                         {0, 0, 0, 0}};
    int c;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case 'i': o.in = optarg; break;
        case 'S': o.sub = 1; break;
        case 'p': o.png = optarg; break;
        case 'c': if (colormap_parse(optarg, &o.cmap)) cli_usage_error(TOOL, "--colormap must be gray, jet or viridis"); break;
        case 'f': o.forward = optarg; break;
        case 'k': o.sink = 1; break;
        case 'C': o.control = optarg; break;
        case 's': o.seeds = optarg; break;
        case 'q': o.quiet = 1; break;
        case 't': o.timeout_s = (int)cli_parse_long(TOOL, "--timeout", optarg, 0, 1 << 30); break;
        case 'h': fputs(USAGE, stdout); return EXIT_OK;
        case 'V': cli_print_version(TOOL); return EXIT_OK;
        default: cli_usage_error(TOOL, "unknown option");
        }
    }
    if (optind < argc) cli_usage_error(TOOL, "unexpected argument '%s'", argv[optind]);
    if (!o.in) cli_usage_error(TOOL, "--in EP is required");
    if (o.sink && o.forward) cli_usage_error(TOOL, "--sink and --forward exclude each other");
    if (o.sink && !o.control) cli_usage_error(TOOL, "--sink needs --control EP to tell the workers to stop");
    zsock_install_signals();
    char err[512];
    void *in = zsock_open(o.sub ? ZMQ_SUB : ZMQ_PULL, o.in, o.sink, err, sizeof(err));
    void *fwd = o.forward ? zsock_open(ZMQ_PUSH, o.forward, 0, err, sizeof(err)) : NULL;
    void *ctl = o.control ? zsock_open(o.sink ? ZMQ_PUB : ZMQ_SUB, o.control, o.sink, err, sizeof(err)) : NULL;
    if (!in || (o.forward && !fwd) || (o.control && !ctl)) {
        fprintf(stderr, "doppel-cat: %s\n", err);
        return EXIT_RUNTIME;
    }
    FILE *seeds = o.seeds ? fopen(o.seeds, "w") : NULL;
    if (o.seeds && !seeds) {
        fprintf(stderr, "doppel-cat: cannot write %s\n", o.seeds);
        return EXIT_RUNTIME;
    }
    long long frames = 0, samples = 0, bad = 0, expect = -1;
    int rc = EXIT_OK, done = 0, ended = 0;
    double last = cli_now();
    void *socks[2] = {in, o.sink ? NULL : ctl};
    while (!done && !zsock_interrupted()) {
        int which = zsock_poll_in(socks, socks[1] ? 2 : 1, 200);
        if (which < 0) {
            if (o.timeout_s && cli_now() - last > o.timeout_s) {
                fprintf(stderr, "doppel-cat: no frame for %d s on %s; giving up\n", o.timeout_s, o.in);
                rc = EXIT_RUNTIME;
                break;
            }
            continue;
        }
        Received r = {0};
        int got = zsock_recv_frame(socks[which], &r, &(FrameLimits){0, 1}, 0, err, sizeof(err));
        if (got < 0) {
            fprintf(stderr, "doppel-cat: bad frame skipped: %s\n", err);
            bad++;
            continue;
        }
        if (!got) continue;
        last = cli_now();
        if (which == 1) {  // worker: the control channel says the stream is over
            if (r.frame.kind == FRAME_END) done = 1;
            received_release(&r);
            continue;
        }
        Frame *f = &r.frame;
        frames++;
        if (!o.quiet) print_frame(f);
        if (f->kind == FRAME_BATCH) {
            const WireTensor *sd = frame_tensor(f, WIRE_SEED), *img = frame_tensor(f, WIRE_IMAGE);
            const WireTensor *any = sd ? sd : img ? img : f->n_tensors ? &f->tensors[0] : NULL;
            long long n = any && any->ndim ? any->shape[0] : 0;
            samples += n;
            if (seeds && sd && sd->dtype == WDT_I64)
                for (size_t i = 0; i < sd->numel; i++) {
                    int64_t v;
                    memcpy(&v, (const char *)sd->data + 8 * i, 8);
                    fprintf(seeds, "%lld\n", (long long)v);
                }
            if (o.png) write_pngs(&o, f);
        }
        if (f->kind == FRAME_END) {
            ended = 1;
            expect = f->has_total ? (long long)f->total : samples;
        }
        if (fwd && zsock_send_frame(fwd, f, -1, err, sizeof(err))) {
            fprintf(stderr, "doppel-cat: forward failed: %s\n", err);
            rc = EXIT_RUNTIME;
            done = 1;
        }
        received_release(&r);
        if (!fwd && ended && samples >= expect) done = 1;  // a plain reader or the sink: all arrived
    }
    if (o.sink && done && rc == EXIT_OK) {  // tell every worker to stop (PUB: sent a few times for late joiners)
        Frame k;
        frame_init(&k, FRAME_END, "control", 0);
        k.has_total = 1, k.total = (uint64_t)samples;
        for (int i = 0; i < 5; i++) {
            zsock_send_frame(ctl, &k, 1000, err, sizeof(err));
            zmq_sleep(0);
        }
        frame_release(&k);
    }
    if (seeds) fclose(seeds);
    fprintf(stderr, "doppel-cat: %lld frames, %lld samples%s%s\n", frames, samples,
            bad ? ", some bad frames skipped" : "", zsock_interrupted() ? " (interrupted)" : "");
    if (o.sink || (!fwd && ended)) printf("summary frames=%lld samples=%lld expected=%lld bad=%lld\n", frames, samples, expect, bad);
    zsock_close(&in);
    zsock_close(&fwd);
    zsock_close(&ctl);
    zsock_term();
    return rc;
}

// doppel-loader: reads (or simulates) spectrograms and streams batches of image, label, seed
// over ZeroMQ, or writes the processed set as PNGs in the same ID_<n>/ layout.
#include <getopt.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

#include "check.h"
#include "cli/cli.h"
#include "data/dataset.h"
#include "io/fileio.h"
#include "net/zsock.h"
#include "rng.h"
#include "sim/walker.h"
#include "wire/frame.h"

#define TOOL "loader"

static const char *USAGE =
    "usage: doppel-loader (--data DIR | --synthetic) [options]\n"
    "\n"
    "examples:\n"
    "  doppel-loader --data ../shared/data/gait10 --resolution 64 --batch 16 --shuffle --epochs 10\n"
    "  doppel-loader --synthetic --users 31 --per-user 200 --forever --shuffle --out @tcp://127.0.0.1:5555\n"
    "  doppel-loader --synthetic --users 31 --per-user 200 --write data/sim31      # save the simulated set\n"
    "  doppel-loader --data DIR --stats                                           # counts per user and split\n"
    "\n"
    "source:\n"
    "  --data DIR            folder of ID_<n>/*.{jpg,jpeg,png,bmp} (users sorted by n)\n"
    "  --synthetic           the built-in walking-person radar simulator instead\n"
    "  --users N             simulated users (31)\n"
    "  --per-user M          simulated spectrograms per user (200)\n"
    "preprocessing:\n"
    "  --resolution R        output size R x R (64)\n"
    "  --channels 1|3        1: colour map inverted to magnitude; 3: RGB as is (default: 1 for\n"
    "                        jet-coloured or gray images, else 3)\n"
    "  --colormap jet|viridis  the map the RGB images are drawn with (jet)\n"
    "  --augment             random circular shift along time (never flips the Doppler axis)\n"
    "selection and order:\n"
    "  --split train|val|all (train; all with --write)   --val-fraction F (0.2): the last F of\n"
    "                        each user's files, in natural order of their names\n"
    "  --batch B (16)   --epochs E (1) | --forever   --shuffle   --drop-last   --seed S (0)\n"
    "output:\n"
    "  --out EP              stream endpoint (@tcp://127.0.0.1:5555; @ binds, > connects)\n"
    "  --write DIR           write PNGs in DIR/ID_<n>/ instead of streaming\n"
    "  --write-colormap gray|jet|viridis  colours of written PNGs (gray: 16-bit magnitudes)\n"
    "  --wait-consumers N    start streaming once N consumers are connected, so parallel workers\n"
    "                        share the stream from its first batch (0: start at once)\n"
    "  --stats               print counts per user and split as JSON and exit\n"
    "  --cache-mb M          keep the preprocessed set in memory up to M MB (4096)\n"
    "  --threads N           worker threads (all cores)\n"
    "  --help, --version\n";

typedef struct {
    const char *data, *out, *write_dir;
    int synthetic, users, per_user, resolution, channels, augment, batch, epochs, forever, shuffle, drop_last;
    int stats, threads, split_given, wait_consumers;
    double val_fraction;
    uint64_t seed;
    long cache_mb;
    Split split;
    Colormap cmap, write_cmap;
} Options;

static Options parse_args(int argc, char **argv) {
    Options o = {.out = "@tcp://127.0.0.1:5555", .users = 31, .per_user = 200, .resolution = 64, .batch = 16,
                 .epochs = 1, .val_fraction = 0.2, .cache_mb = 4096, .split = SPLIT_TRAIN, .cmap = CMAP_JET,
                 .write_cmap = CMAP_GRAY};
    enum { O_DATA = 256, O_SYN, O_USERS, O_PER, O_RES, O_CH, O_CMAP, O_AUG, O_SPLIT, O_VALF, O_BATCH, O_EPOCHS,
           O_FOREVER, O_SHUFFLE, O_DROP, O_SEED, O_OUT, O_WRITE, O_WCMAP, O_STATS, O_CACHE, O_THREADS, O_WAIT, O_HELP,
           O_VERSION };
    static const struct option opts[] = {
        {"data", 1, 0, O_DATA}, {"synthetic", 0, 0, O_SYN}, {"users", 1, 0, O_USERS}, {"per-user", 1, 0, O_PER},
        {"resolution", 1, 0, O_RES}, {"channels", 1, 0, O_CH}, {"colormap", 1, 0, O_CMAP}, {"augment", 0, 0, O_AUG},
        {"split", 1, 0, O_SPLIT}, {"val-fraction", 1, 0, O_VALF}, {"batch", 1, 0, O_BATCH}, {"epochs", 1, 0, O_EPOCHS},
        {"forever", 0, 0, O_FOREVER}, {"shuffle", 0, 0, O_SHUFFLE}, {"drop-last", 0, 0, O_DROP}, {"seed", 1, 0, O_SEED},
        {"out", 1, 0, O_OUT}, {"write", 1, 0, O_WRITE}, {"write-colormap", 1, 0, O_WCMAP}, {"stats", 0, 0, O_STATS},
        {"cache-mb", 1, 0, O_CACHE}, {"wait-consumers", 1, 0, O_WAIT}, {"threads", 1, 0, O_THREADS}, {"help", 0, 0, O_HELP}, {"version", 0, 0, O_VERSION},
        {0, 0, 0, 0}};
    int c;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case O_DATA: o.data = optarg; break;
        case O_SYN: o.synthetic = 1; break;
        case O_USERS: o.users = (int)cli_parse_long(TOOL, "--users", optarg, 1, 100000); break;
        case O_PER: o.per_user = (int)cli_parse_long(TOOL, "--per-user", optarg, 1, 10000000); break;
        case O_RES: o.resolution = (int)cli_parse_long(TOOL, "--resolution", optarg, 8, 4096); break;
        case O_CH: o.channels = (int)cli_parse_long(TOOL, "--channels", optarg, 1, 3); break;
        case O_CMAP:
            if (colormap_parse(optarg, &o.cmap) || o.cmap == CMAP_GRAY)
                cli_usage_error(TOOL, "--colormap must be jet or viridis, not '%s'", optarg);
            break;
        case O_AUG: o.augment = 1; break;
        case O_SPLIT:
            if (split_parse(optarg, &o.split)) cli_usage_error(TOOL, "--split must be train, val or all, not '%s'", optarg);
            o.split_given = 1;
            break;
        case O_VALF: o.val_fraction = cli_parse_double(TOOL, "--val-fraction", optarg, 0, 1); break;
        case O_BATCH: o.batch = (int)cli_parse_long(TOOL, "--batch", optarg, 1, 65536); break;
        case O_EPOCHS: o.epochs = (int)cli_parse_long(TOOL, "--epochs", optarg, 1, 1000000000); break;
        case O_FOREVER: o.forever = 1; break;
        case O_SHUFFLE: o.shuffle = 1; break;
        case O_DROP: o.drop_last = 1; break;
        case O_SEED: o.seed = (uint64_t)cli_parse_long(TOOL, "--seed", optarg, 0, (long)(~0UL >> 1)); break;
        case O_OUT: o.out = optarg; break;
        case O_WRITE: o.write_dir = optarg; break;
        case O_WCMAP:
            if (colormap_parse(optarg, &o.write_cmap)) cli_usage_error(TOOL, "--write-colormap must be gray, jet or viridis");
            break;
        case O_STATS: o.stats = 1; break;
        case O_CACHE: o.cache_mb = cli_parse_long(TOOL, "--cache-mb", optarg, 0, 1L << 30); break;
        case O_WAIT: o.wait_consumers = (int)cli_parse_long(TOOL, "--wait-consumers", optarg, 0, 100000); break;
        case O_THREADS: o.threads = (int)cli_parse_long(TOOL, "--threads", optarg, 1, 1024); break;
        case O_HELP: fputs(USAGE, stdout); exit(EXIT_OK);
        case O_VERSION: cli_print_version(TOOL); exit(EXIT_OK);
        default: cli_usage_error(TOOL, "unknown option");
        }
    }
    if (optind < argc) cli_usage_error(TOOL, "unexpected argument '%s'", argv[optind]);
    if (!o.data == !o.synthetic) cli_usage_error(TOOL, "give exactly one of --data DIR or --synthetic");
    if (o.channels == 2) cli_usage_error(TOOL, "--channels must be 1 or 3");
    if (o.synthetic && o.channels == 3) cli_usage_error(TOOL, "simulated spectrograms have 1 channel");
    return o;
}

// ---- the selected samples, preprocessed (cached in memory when they fit) ----
typedef struct {
    const Dataset *ds;
    Preprocess pp;
    int *idx, n;        // selected dataset indices
    float *cache;       // (n, C, R, R) or NULL
    unsigned char *ok;  // per selected sample: preprocessed without error
    size_t per;         // floats per sample
} Source;

static int load_one(Source *s, int k, float *dst) {
    char err[512];
    if (preprocess_sample(s->ds, s->idx[k], &s->pp, dst, err, sizeof(err))) {
        fprintf(stderr, "doppel-loader: skipping %s\n", err);
        return 0;
    }
    return 1;
}

static void source_cache(Source *s) {
    s->cache = xmalloc(s->n * s->per * sizeof(float));
    Progress p;
    progress_start(&p, "preprocess", s->n, "img");
    int done = 0;
#pragma omp parallel for schedule(dynamic, 4)
    for (int k = 0; k < s->n; k++) {
        s->ok[k] = (unsigned char)load_one(s, k, s->cache + (size_t)k * s->per);
        int d;
#pragma omp atomic capture
        d = ++done;
        if (omp_get_thread_num() == 0) progress_update(&p, d, NULL);
    }
    progress_update(&p, s->n, NULL);
    progress_finish(&p, NULL);
    double dt = cli_now() - p.t_start;
    fprintf(stderr, "doppel-loader: preprocessed %d images in %.2f s (%.0f img/s, %d threads)\n", s->n, dt,
            dt > 0 ? s->n / dt : 0.0, omp_get_max_threads());
}

// ---- streaming ----
static json_t *stream_meta(const Options *o, const Source *s, int epoch) {
    json_t *users = json_array();
    for (int u = 0; u < s->ds->n_users; u++) json_array_append_new(users, json_string(s->ds->users[u]));
    return json_pack("{s:o, s:s, s:s, s:s, s:i, s:i, s:s, s:i, s:b, s:I}", "users", users, "stage", "loader", "source",
                     o->synthetic ? "synthetic" : o->data, "split", split_name(o->split), "resolution", o->resolution,
                     "channels", s->pp.channels, "colormap", colormap_name(s->pp.channels == 1 ? s->pp.cmap : CMAP_GRAY),
                     "epoch", epoch, "augment", o->augment, "seed", (json_int_t)o->seed);
}

static int stream(const Options *o, Source *s) {
    char err[512];
    PeerWatch watch;
    void *sock = o->wait_consumers > 0 ? zsock_open_watched(ZMQ_PUSH, o->out, 1, &watch, err, sizeof(err))
                                       : zsock_open(ZMQ_PUSH, o->out, 1, err, sizeof(err));
    if (!sock) {
        fprintf(stderr, "doppel-loader: %s\n", err);
        return EXIT_RUNTIME;
    }
    if (o->wait_consumers > 0) {
        fprintf(stderr, "doppel-loader: waiting for %d consumers on %s\n", o->wait_consumers, o->out);
        int ok = peerwatch_wait(&watch, o->wait_consumers, -1) == 0;
        peerwatch_stop(&watch);
        if (!ok) {
            zsock_close(&sock);
            zsock_term();
            return zsock_interrupted() ? EXIT_OK : EXIT_RUNTIME;
        }
    }
    int C = s->pp.channels, R = o->resolution, B = o->batch;
    int64_t per_epoch = o->drop_last ? (int64_t)(s->n / B) * B : s->n;
    int64_t total = o->forever ? 0 : per_epoch * o->epochs;
    float *img = xmalloc((size_t)B * s->per * sizeof(float)), *tmp = xmalloc((size_t)R * sizeof(float));
    int32_t *label = xmalloc((size_t)B * sizeof(int32_t));
    int64_t *seed = xmalloc((size_t)B * sizeof(int64_t));
    int *order = xmalloc((size_t)s->n * sizeof(int));
    Rng rng;
    rng_seed(&rng, o->seed * 0x2545F4914F6CDD1DULL + 1);
    Progress p;
    progress_start(&p, "stream", total, "img");
    int64_t sent = 0, frames = 0;
    int rc = EXIT_OK;
    double t0 = cli_now();
    fprintf(stderr, "doppel-loader: %d samples (%s split), %d users, %dx%dx%d, batch %d -> %s\n", s->n,
            split_name(o->split), s->ds->n_users, C, R, R, B, o->out);
    for (int epoch = 0; (o->forever || epoch < o->epochs) && !zsock_interrupted() && rc == EXIT_OK; epoch++) {
        for (int k = 0; k < s->n; k++) order[k] = k;
        if (o->shuffle)
            for (int k = s->n - 1; k > 0; k--) {
                int j = (int)rng_below(&rng, (uint32_t)k + 1), t = order[k];
                order[k] = order[j], order[j] = t;
            }
        json_t *meta = stream_meta(o, s, epoch);
        for (int64_t k0 = 0; k0 < per_epoch && !zsock_interrupted(); k0 += B) {
            int m = (int)(per_epoch - k0 < B ? per_epoch - k0 : B);
            int got = 0;
            for (int i = 0; i < m; i++) {  // cached: a copy; otherwise decode the batch in parallel below
                int k = order[k0 + i];
                label[i] = s->ds->samples[s->idx[k]].user;
                seed[i] = ((int64_t)epoch << 32) | (int64_t)k;
            }
            if (!s->cache) {
#pragma omp parallel for schedule(dynamic, 1)
                for (int i = 0; i < m; i++) s->ok[order[k0 + i]] = (unsigned char)load_one(s, order[k0 + i], img + i * s->per);
            }
            for (int i = 0; i < m; i++) {  // compact: drop samples that failed to load
                int k = order[k0 + i];
                if (!s->ok[k]) continue;
                float *dst = img + (size_t)got * s->per;
                if (s->cache) memcpy(dst, s->cache + (size_t)k * s->per, s->per * sizeof(float));
                else if (got != i) memmove(dst, img + (size_t)i * s->per, s->per * sizeof(float));
                if (o->augment) augment_time_shift(dst, C, R, R, (int)rng_below(&rng, (uint32_t)R), tmp);
                label[got] = label[i], seed[got] = seed[i];
                got++;
            }
            if (!got) continue;
            Frame f;
            frame_init(&f, FRAME_BATCH, "loader", (uint64_t)frames);
            if (total) f.has_total = 1, f.total = (uint64_t)total;
            frame_set_meta(&f, meta);
            frame_add_tensor(&f, WIRE_IMAGE, WDT_F32, 4, (int64_t[]){got, C, R, R}, img);
            frame_add_tensor(&f, WIRE_LABEL, WDT_I32, 1, (int64_t[]){got}, label);
            frame_add_tensor(&f, WIRE_SEED, WDT_I64, 1, (int64_t[]){got}, seed);
            if (zsock_send_frame(sock, &f, -1, err, sizeof(err))) {
                if (!zsock_interrupted()) fprintf(stderr, "doppel-loader: send failed: %s\n", err), rc = EXIT_RUNTIME;
                frame_release(&f);
                break;
            }
            frame_release(&f);
            sent += got, frames++;
            char extra[64];
            snprintf(extra, sizeof(extra), "epoch %d", epoch + 1);
            progress_update(&p, sent, extra);
        }
        json_decref(meta);
    }
    double dt = cli_now() - t0;
    progress_finish(&p, NULL);
    if (rc == EXIT_OK) {  // end of stream with the counts; wait (linger) for it to be delivered
        Frame f;
        frame_init(&f, FRAME_END, "loader", (uint64_t)frames);
        f.has_total = 1, f.total = (uint64_t)sent;
        json_t *meta = json_pack("{s:I, s:s, s:b}", "frames", (json_int_t)frames, "stage", "loader", "interrupted",
                                 zsock_interrupted());
        frame_set_meta(&f, meta);
        json_decref(meta);
        if (zsock_send_frame(sock, &f, 10000, err, sizeof(err)))
            fprintf(stderr, "doppel-loader: could not send end of stream: %s\n", err);
        frame_release(&f);
        int linger = zsock_interrupted() ? 0 : 600000;
        zmq_setsockopt(sock, ZMQ_LINGER, &linger, sizeof(linger));
    }
    fprintf(stderr, "doppel-loader: sent %lld samples in %lld frames, %.1f s, %.0f img/s%s\n", (long long)sent,
            (long long)frames, dt, dt > 0 ? sent / dt : 0.0, zsock_interrupted() ? " (interrupted)" : "");
    free(img), free(tmp), free(label), free(seed), free(order);
    zsock_close(&sock);
    zsock_term();
    return zsock_interrupted() ? EXIT_OK : rc;
}

// ---- --write and --stats ----
static int write_set(const Options *o, Source *s) {
    char err[512], path[8192];
    int C = s->pp.channels, R = o->resolution, failed = 0;
    Progress p;
    progress_start(&p, "write", s->n, "img");
    for (int k = 0; k < s->n; k++) {
        const Sample *smp = &s->ds->samples[s->idx[k]];
        if (!s->ok[k]) continue;
        Image im = {C, R, R, s->cache + (size_t)k * s->per, 16}, out = {0};
        for (size_t i = 0; i < s->per; i++) im.data[i] = 0.5f * (im.data[i] + 1.0f);  // back to [0, 1]
        const Image *w = &im;
        if (C == 1 && o->write_cmap != CMAP_GRAY) {
            colormap_render(o->write_cmap, &im, &out);
            w = &out;
        }
        snprintf(path, sizeof(path), "%s/%s", o->write_dir, s->ds->users[smp->user]);
        if (mkdir_p(path, err, sizeof(err))) {
            fprintf(stderr, "doppel-loader: %s\n", err);
            return EXIT_RUNTIME;
        }
        snprintf(path, sizeof(path), "%s/%s/%s.png", o->write_dir, s->ds->users[smp->user], smp->name);
        char *gen = NULL;
        if (!smp->path) {
            WalkerTraits t;
            walker_traits(&t, s->ds->sim_seed, smp->user);
            json_t *j = json_pack("{s:s, s:s, s:I, s:I, s:{s:f, s:f, s:f, s:f, s:f, s:f}}", "source", "doppel-loader --synthetic",
                                  "user", s->ds->users[smp->user], "users_seed", (json_int_t)s->ds->sim_seed,
                                  "sample_seed", (json_int_t)smp->sim_seed, "traits", "height_m", t.height, "rel_speed",
                                  t.rel_speed, "arm_swing", t.arm_swing, "asymmetry", t.asymmetry, "body_scale", t.body_scale,
                                  "aspect_deg", t.aspect_deg);
            gen = json_dumps(j, JSON_COMPACT);
            json_decref(j);
        }
        if (image_write_png(path, w, w->C == 1 ? 16 : 8, gen, err, sizeof(err))) {
            fprintf(stderr, "doppel-loader: %s\n", err);
            failed++;
        }
        free(gen);
        image_free(&out);
        progress_update(&p, k + 1, NULL);
    }
    progress_finish(&p, NULL);
    fprintf(stderr, "doppel-loader: wrote %d PNGs to %s/ID_<n>/%s\n", s->n - failed, o->write_dir,
            failed ? " (some failed, see above)" : "");
    return failed ? EXIT_RUNTIME : EXIT_OK;
}

static void print_stats(const Options *o, const Dataset *ds, const char *why, int channels) {
    json_t *users = json_array();
    for (int u = 0; u < ds->n_users; u++) {
        int tr = 0, va = 0;
        for (int i = 0; i < ds->n_samples; i++)
            if (ds->samples[i].user == u) ds->samples[i].val ? va++ : tr++;
        json_array_append_new(users, json_pack("{s:s, s:i, s:i, s:i}", "user", ds->users[u], "index", u, "train", tr, "val", va));
    }
    int tr = 0;
    for (int i = 0; i < ds->n_samples; i++) tr += !ds->samples[i].val;
    json_t *j = json_pack("{s:s, s:i, s:i, s:i, s:i, s:f, s:i, s:s, s:o}", "source", o->synthetic ? "synthetic" : o->data,
                          "users", ds->n_users, "samples", ds->n_samples, "train", tr, "val", ds->n_samples - tr,
                          "val_fraction", o->val_fraction, "channels", channels, "channels_reason", why, "per_user", users);
    char *s = json_dumps(j, JSON_INDENT(2));
    puts(s);
    free(s);
    json_decref(j);
}

int main(int argc, char **argv) {
    Options o = parse_args(argc, argv);
    if (o.threads) omp_set_num_threads(o.threads);
    zsock_install_signals();
    char err[512], why[256];
    Dataset ds;
    if (o.synthetic) {
        dataset_synthetic(&ds, o.users, o.per_user, o.seed);
    } else if (dataset_scan(&ds, o.data, err, sizeof(err))) {
        fprintf(stderr, "doppel-loader: %s\n", err);
        return EXIT_RUNTIME;
    }
    dataset_split(&ds, o.val_fraction);
    Colormap guessed;
    int channels = dataset_guess_channels(&ds, &guessed, why, sizeof(why));
    if (o.channels) {
        channels = o.channels;
        snprintf(why, sizeof(why), "--channels %d", channels);
    } else {
        o.cmap = guessed;
    }
    if (o.stats) {
        print_stats(&o, &ds, why, channels);
        dataset_free(&ds);
        return EXIT_OK;
    }
    fprintf(stderr, "doppel-loader: %s\n", why);
    Source s = {.ds = &ds, .pp = {o.resolution, channels, o.cmap}};
    if (o.write_dir && !o.split_given) o.split = SPLIT_ALL;
    s.n = dataset_select(&ds, o.split, &s.idx);
    s.per = (size_t)channels * o.resolution * o.resolution;
    s.ok = xcalloc((size_t)s.n + 1, 1);
    if (!s.n) {
        fprintf(stderr, "doppel-loader: the %s split is empty (--val-fraction %g)\n", split_name(o.split), o.val_fraction);
        return EXIT_RUNTIME;
    }
    int rc;
    if (o.write_dir || (double)s.n * s.per * 4 <= o.cache_mb * 1048576.0) source_cache(&s);
    if (o.write_dir) rc = write_set(&o, &s);
    else rc = stream(&o, &s);
    free(s.cache), free(s.ok), free(s.idx);
    dataset_free(&ds);
    return rc;
}

// doppel-sim_grid: renders simulated spectrograms as one colour-mapped PNG, a row per user and a
// column per sample, exactly the users and samples `doppel-loader --synthetic --seed S` makes.
// docs/img/simulator_grid.png comes from the first example.
#include <getopt.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "cli/cli.h"
#include "data/dataset.h"
#include "image/image.h"
#include "sim/walker.h"

#define TOOL "sim_grid"

static const char *USAGE =
    "usage: doppel-sim_grid [options]\n"
    "\n"
    "examples:\n"
    "  doppel-sim_grid --out docs/img/simulator_grid.png          # 6 users x 4 samples, 128 px, jet\n"
    "  doppel-sim_grid --users 31 --per-user 8 --size 64 --out all.png --seed 7\n"
    "\n"
    "  --users N (6)      rows: users ID_1 .. ID_N of the synthetic set\n"
    "  --per-user M (4)   columns: that user's first M samples\n"
    "  --size R (128)     tile size, pixels (each tile is simulated at R x R)\n"
    "  --gap G (2)        white pixels between tiles\n"
    "  --seed S (0)       the synthetic set's seed (as doppel-loader --synthetic --seed S)\n"
    "  --colormap jet|viridis|gray (jet)\n"
    "  --out PATH         PNG to write (required); the users' traits go into its 'generation' text\n"
    "                     and, one line per user, to stdout\n"
    "  --help, --version\n";

int main(int argc, char **argv) {
    int users = 6, per = 4, R = 128, gap = 2;
    uint64_t seed = 0;
    const char *out = NULL;
    Colormap cmap = CMAP_JET;
    enum { O_USERS = 1, O_PER, O_SIZE, O_GAP, O_SEED, O_CMAP, O_OUT, O_HELP, O_VERSION };
    static const struct option opts[] = {{"users", 1, 0, O_USERS}, {"per-user", 1, 0, O_PER},   {"size", 1, 0, O_SIZE},
                                         {"gap", 1, 0, O_GAP},     {"seed", 1, 0, O_SEED},      {"colormap", 1, 0, O_CMAP},
                                         {"out", 1, 0, O_OUT},     {"help", 0, 0, O_HELP},      {"version", 0, 0, O_VERSION},
                                         {0, 0, 0, 0}};
    int c;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case O_USERS: users = (int)cli_parse_long(TOOL, "--users", optarg, 1, 1000); break;
        case O_PER: per = (int)cli_parse_long(TOOL, "--per-user", optarg, 1, 1000); break;
        case O_SIZE: R = (int)cli_parse_long(TOOL, "--size", optarg, 8, 2048); break;
        case O_GAP: gap = (int)cli_parse_long(TOOL, "--gap", optarg, 0, 64); break;
        case O_SEED: seed = (uint64_t)cli_parse_long(TOOL, "--seed", optarg, 0, (long)(~0UL >> 1)); break;
        case O_CMAP:
            if (colormap_parse(optarg, &cmap)) cli_usage_error(TOOL, "--colormap must be jet, viridis or gray");
            break;
        case O_OUT: out = optarg; break;
        case O_HELP: fputs(USAGE, stdout); return EXIT_OK;
        case O_VERSION: cli_print_version(TOOL); return EXIT_OK;
        default: cli_usage_error(TOOL, "unknown option");
        }
    }
    if (optind < argc) cli_usage_error(TOOL, "unexpected argument '%s'", argv[optind]);
    if (!out) cli_usage_error(TOOL, "--out PATH is required");
    if ((long)users * (R + gap) > 20000 || (long)per * (R + gap) > 20000)
        cli_usage_error(TOOL, "a %d x %d grid of %d px tiles is too large for one PNG", users, per, R);

    Dataset ds;
    dataset_synthetic(&ds, users, per, seed);
    RadarConfig rc = radar_default();
    int GH = users * (R + gap) - gap, GW = per * (R + gap) - gap;
    Image gray = {0}, rgb = {0};
    CHECK(image_alloc(&gray, 1, GH, GW) == 0, "cannot allocate a %dx%d image", GH, GW);
    float *tile = xmalloc(sizeof(float) * (size_t)R * R);  // (R, R)
    json_t *gen = json_pack("{s:s, s:I, s:i, s:i, s:i, s:[]}", "source", "doppel-sim_grid", "seed", (json_int_t)seed,
                            "users", users, "per_user", per, "size", R, "traits");
    for (int u = 0; u < users; u++) {
        WalkerTraits t;
        walker_traits(&t, ds.sim_seed, u);
        printf("%s height %.2f m  rel_speed %.2f (%.2f m/s, cycle %.2f s)  arm_swing %.2f  asymmetry %.2f  body_scale %.2f  "
               "aspect %.1f deg\n",
               ds.users[u], t.height, t.rel_speed, walker_speed_mps(&t), walker_cycle_s(&t), t.arm_swing, t.asymmetry,
               t.body_scale, t.aspect_deg);
        json_array_append_new(json_object_get(gen, "traits"),
                              json_pack("{s:s, s:f, s:f, s:f, s:f, s:f, s:f}", "user", ds.users[u], "height_m", t.height,
                                        "rel_speed", t.rel_speed, "arm_swing", t.arm_swing, "asymmetry", t.asymmetry,
                                        "body_scale", t.body_scale, "aspect_deg", t.aspect_deg));
        for (int k = 0; k < per; k++) {
            walker_spectrogram(tile, R, R, &t, &rc, ds.samples[u * per + k].sim_seed);
            for (int y = 0; y < R; y++)
                memcpy(gray.data + (size_t)(u * (R + gap) + y) * GW + k * (R + gap), tile + (size_t)y * R, sizeof(float) * R);
        }
    }
    CHECK(colormap_render(cmap, &gray, &rgb) == 0, "colour map rendering failed");
    for (int y = 0; y < GH; y++)  // gaps in white
        for (int x = 0; x < GW; x++)
            if (y % (R + gap) >= R || x % (R + gap) >= R)
                for (int ch = 0; ch < 3; ch++) rgb.data[((size_t)ch * GH + y) * GW + x] = 1.0f;
    char *gen_text = json_dumps(gen, JSON_COMPACT), err[512];
    int rc_write = image_write_png(out, &rgb, 8, gen_text, err, sizeof(err));
    if (rc_write) fprintf(stderr, "doppel-%s: %s\n", TOOL, err);
    else fprintf(stderr, "doppel-%s: wrote %s (%d x %d: %d users x %d samples of %d px)\n", TOOL, out, GW, GH, users, per, R);
    free(gen_text);
    json_decref(gen);
    free(tile);
    image_free(&gray);
    image_free(&rgb);
    dataset_free(&ds);
    return rc_write ? EXIT_RUNTIME : EXIT_OK;
}

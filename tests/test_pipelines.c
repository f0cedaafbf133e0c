// test_pipelines.c: pipelines/train.sh, generate.sh and demo.sh run end to end on the tiny preset
// (simulated users, a few steps each) and leave what they promise; a failing stage fails the script.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "testlib.h"

#define RUN_DIR "build/test-out/pipeline"

static int count_pngs(const char *dir) {
    char cmd[512];
    snprintf(cmd, sizeof(cmd), "find %s -name '*.png' 2>/dev/null | wc -l", dir);
    FILE *f = popen(cmd, "r");
    int n = -1;
    if (f && fscanf(f, "%d", &n) != 1) n = -1;
    if (f) pclose(f);
    return n;
}

static int exists(const char *p) {
    struct stat st;
    return stat(p, &st) == 0;
}

// runs a pipeline script with BIN pointing at the binaries under test (tests/run.sh sets DOPPEL_BIN)
static int sh(const char *args) {
    const char *bin = getenv("DOPPEL_BIN");
    if (!bin || !*bin) bin = "bin";
    char cmd[1024];
    snprintf(cmd, sizeof(cmd), "BIN=%s%s %s > " RUN_DIR ".log 2>&1", bin[0] == '/' ? "" : "$PWD/", bin, args);
    int rc = system(cmd);
    return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

static void test_train_then_generate(void) {
    size_t len;
    EXPECT(system("rm -rf " RUN_DIR " && mkdir -p build/test-out") == 0, "rm");
    int rc = sh("pipelines/train.sh --synthetic --users 3 --per-user 8 --preset tiny --resolution 32 --vae-steps 3 "
                "--unet-steps 3 --out " RUN_DIR);
    char *log = (char *)tl_read_file(RUN_DIR ".log", &len);
    EXPECT(rc == 0, "train.sh: rc %d\n%s", rc, log ? log : "");
    free(log);
    EXPECT(exists(RUN_DIR "/vae/config.json") && exists(RUN_DIR "/latents.safetensors") && exists(RUN_DIR "/unet/ema/config.json"),
           "train.sh left no VAE, latent cache or UNet");
    rc = sh("pipelines/generate.sh --run " RUN_DIR " --per-user 2 --steps 3 --users ID_1,ID_3");
    log = (char *)tl_read_file(RUN_DIR ".log", &len);
    EXPECT(rc == 0, "generate.sh: rc %d\n%s", rc, log ? log : "");
    free(log);
    EXPECT(count_pngs(RUN_DIR "/generated/ID_1") == 2 && count_pngs(RUN_DIR "/generated/ID_3") == 2 &&
               count_pngs(RUN_DIR "/generated") == 4,
           "generate.sh: expected 2 PNGs for ID_1 and ID_3, found %d in all", count_pngs(RUN_DIR "/generated"));
    // a bad option fails the script with its usage
    rc = sh("pipelines/generate.sh --run " RUN_DIR " --no-such-option");
    EXPECT(rc != 0, "generate.sh accepted an unknown option");
    rc = sh("pipelines/train.sh --out " RUN_DIR "/x");
    EXPECT(rc != 0, "train.sh ran without --data or --synthetic");
}

// the demo, shrunk: simulated data, both trainings, generation, judge and score with its report
static void test_demo(void) {
    size_t len;
    EXPECT(system("rm -rf " RUN_DIR "-demo && mkdir -p build/test-out") == 0, "rm");
    int rc = sh("pipelines/demo.sh --users 3 --per-user 16 --vae-steps 3 --unet-steps 3 --judge-steps 5 --gen-per-user 4 "
                "--out " RUN_DIR "-demo");
    char *log = (char *)tl_read_file(RUN_DIR ".log", &len);
    EXPECT(rc == 0, "demo.sh: rc %d\n%s", rc, log ? log : "");
    EXPECT(log && strstr(log, "the report is " RUN_DIR "-demo/report/score.md"), "demo.sh does not say where the report is");
    free(log);
    EXPECT(count_pngs(RUN_DIR "-demo/data") == 48 && count_pngs(RUN_DIR "-demo/generated") == 12,
           "demo data %d PNGs (want 48), generated %d (want 12)", count_pngs(RUN_DIR "-demo/data"),
           count_pngs(RUN_DIR "-demo/generated"));
    char *md = (char *)tl_read_file(RUN_DIR "-demo/report/score.md", &len);
    EXPECT(md && strstr(md, "| user accuracy |") && strstr(md, "FID") && strstr(md, "| check |"), "score.md:\n%s",
           md ? md : "(missing)");
    free(md);
    EXPECT(exists(RUN_DIR "-demo/report/score.json") && exists(RUN_DIR "-demo/judge/config.json"), "score.json and the judge");
    // validate.sh on its own, with the demo's judge: the same report again
    rc = sh("pipelines/validate.sh --data " RUN_DIR "-demo/data --generated " RUN_DIR "-demo/generated --resolution 32 "
            "--judge " RUN_DIR "-demo/judge --out " RUN_DIR "-validate");
    log = (char *)tl_read_file(RUN_DIR ".log", &len);
    EXPECT(rc == 0 && exists(RUN_DIR "-validate/report/score.json"), "validate.sh: rc %d\n%s", rc, log ? log : "");
    free(log);
    rc = sh("pipelines/validate.sh --data " RUN_DIR "-demo/data --generator tcp://127.0.0.1:1");
    EXPECT(rc != 0, "validate.sh --generator without --vae ran");
}

int main(void) {
    RUN(test_train_then_generate);
    RUN(test_demo);
    return tl_finish();
}

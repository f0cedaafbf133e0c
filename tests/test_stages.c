// test_stages.c: the executables as users run them: --help/--version/usage errors, the loader
// streaming simulated data to doppel-cat, fan-out to 3 workers with fan-in counting (every
// sample exactly once, every process exits), --write determinism, bad frames skipped by a
// running consumer, and the real gait10 set when it is present.
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <zmq.h>

#include "check.h"
#include "net/zsock.h"
#include "proc.h"
#include "testlib.h"
#include "wire/frame.h"

#define GAIT10 (getenv("DOPPEL_GAIT10") ? getenv("DOPPEL_GAIT10") : "../shared/data/gait10")

static void ep(char *buf, size_t n, const char *prefix, int port) { snprintf(buf, n, "%stcp://127.0.0.1:%d", prefix, port); }

// count distinct values in a file of one integer per line; returns lines, sets *distinct
static long count_seeds(const char *path, long *distinct) {
    char *s = proc_read(path);
    long n = 0, cap = 1024;
    long long *v = xmalloc((size_t)cap * sizeof(long long));
    for (char *p = strtok(s, "\n"); p; p = strtok(NULL, "\n")) {
        if (n == cap) v = xrealloc(v, (size_t)(cap *= 2) * sizeof(long long));
        v[n++] = atoll(p);
    }
    long d = 0;
    for (long i = 0; i < n; i++) {  // n is small in tests
        int seen = 0;
        for (long j = 0; j < i && !seen; j++) seen = v[j] == v[i];
        d += !seen;
    }
    free(v), free(s);
    *distinct = d;
    return n;
}

static void test_cli(void) {
    const char *tools[] = {"doppel-loader", "doppel-cat"};
    for (int i = 0; i < 2; i++) {
        char *out, *err;
        int rc = proc_run((const char *[]){tools[i], "--help", NULL}, 10, &out, &err);
        EXPECT(rc == 0 && strstr(out, "usage:") && strstr(out, "examples:"), "%s --help: rc %d", tools[i], rc);
        EXPECT(strstr(out, "examples:") < strstr(out, "  --"), "%s --help: examples come before the options", tools[i]);
        free(out), free(err);
        rc = proc_run((const char *[]){tools[i], "--version", NULL}, 10, &out, &err);
        EXPECT(rc == 0 && strstr(out, "0."), "%s --version: rc %d '%s'", tools[i], rc, out);
        free(out), free(err);
        rc = proc_run((const char *[]){tools[i], "--no-such-option", NULL}, 10, &out, &err);
        EXPECT(rc == 2 && strstr(err, "--help"), "%s bad option: rc %d, stderr '%s'", tools[i], rc, err);
        free(out), free(err);
    }
    char *out, *err;
    int rc = proc_run((const char *[]){"doppel-loader", "--synthetic", "--resolution", "abc", NULL}, 10, &out, &err);
    EXPECT(rc == 2 && strstr(err, "--resolution"), "bad number: rc %d, stderr '%s'", rc, err);
    free(out), free(err);
    rc = proc_run((const char *[]){"doppel-loader", "--data", "/nonexistent/folder", NULL}, 10, &out, &err);
    EXPECT(rc == 1 && strstr(err, "/nonexistent/folder"), "missing folder: rc %d, stderr '%s'", rc, err);
    free(out), free(err);
}

static void test_loader_to_cat(void) {
    char bind[64], conn[64];
    int port = free_port();
    ep(bind, sizeof(bind), "@", port), ep(conn, sizeof(conn), ">", port);
    Proc loader, cat;
    proc_start(&loader, (const char *[]){"doppel-loader", "--synthetic", "--users", "3", "--per-user", "5", "--resolution",
                                         "32", "--batch", "4", "--epochs", "2", "--shuffle", "--out", bind, NULL});
    proc_start(&cat, (const char *[]){"doppel-cat", "--in", conn, "--seeds", "build/test-out/cat_seeds.txt", "--timeout", "60", NULL});
    int rl = proc_wait(&loader, 90), rc = proc_wait(&cat, 90);
    char *out = proc_read(cat.out), *lerr = proc_read(loader.err);
    EXPECT(rl == 0 && rc == 0, "loader rc %d, cat rc %d; loader said: %s", rl, rc, lerr);
    // 5 per user, val fraction 0.2 -> 4 train each; 3 users x 4 x 2 epochs = 24
    EXPECT(strstr(out, "summary frames=7 samples=24 expected=24 bad=0"), "cat summary: %s", out);
    EXPECT(strstr(out, "image<f4(4,1,32,32)") && strstr(out, "label<i4(4)") && strstr(out, "seed<i8(4)"), "frame lines: %.300s", out);
    long distinct, n = count_seeds("build/test-out/cat_seeds.txt", &distinct);
    EXPECT(n == 24 && distinct == 24, "%ld seeds, %ld distinct", n, distinct);
    free(out), free(lerr);
}

// loader -> 3 workers (doppel-cat --forward) -> sink (doppel-cat --sink) with a control channel
static void test_fan_out_fan_in(void) {
    int pd = free_port(), ps = free_port(), pc = free_port();
    char dbind[64], dconn[64], sbind[64], sconn[64], cbind[64], cconn[64];
    ep(dbind, 64, "@", pd), ep(dconn, 64, ">", pd), ep(sbind, 64, "@", ps), ep(sconn, 64, ">", ps);
    ep(cbind, 64, "@", pc), ep(cconn, 64, ">", pc);
    Proc sink, workers[3], loader;
    proc_start(&sink, (const char *[]){"doppel-cat", "--in", sbind, "--sink", "--control", cbind, "--quiet", "--seeds",
                                       "build/test-out/fan_seeds.txt", "--timeout", "60", NULL});
    for (int i = 0; i < 3; i++)
        proc_start(&workers[i], (const char *[]){"doppel-cat", "--in", dconn, "--forward", sconn, "--control", cconn,
                                                 "--quiet", "--timeout", "60", NULL});
    proc_start(&loader, (const char *[]){"doppel-loader", "--synthetic", "--users", "6", "--per-user", "10", "--resolution",
                                         "16", "--batch", "3", "--split", "all", "--wait-consumers", "3", "--out", dbind, NULL});
    int rl = proc_wait(&loader, 90), rs = proc_wait(&sink, 90);
    int rw[3];
    for (int i = 0; i < 3; i++) rw[i] = proc_wait(&workers[i], 30);
    char *sout = proc_read(sink.out);
    EXPECT(rl == 0 && rs == 0, "loader rc %d, sink rc %d", rl, rs);
    for (int i = 0; i < 3; i++) EXPECT(rw[i] == 0, "worker %d rc %d (did not stop cleanly)", i, rw[i]);
    EXPECT(strstr(sout, "samples=60 expected=60 bad=0"), "sink summary: %s", sout);
    long distinct, n = count_seeds("build/test-out/fan_seeds.txt", &distinct);
    EXPECT(n == 60 && distinct == 60, "%ld seeds delivered, %ld distinct (want 60 exactly once)", n, distinct);
    // each worker took a share (round robin): all three forwarded something
    for (int i = 0; i < 3; i++) {
        char *e = proc_read(workers[i].err);
        EXPECT(!strstr(e, " frames, 0 samples"), "worker %d got nothing: %s", i, e);
        free(e);
    }
    free(sout);
}

static int count_pngs(const char *dir) {
    char cmd[512];
    snprintf(cmd, sizeof(cmd), "find %s -name '*.png' | wc -l", dir);
    FILE *f = popen(cmd, "r");
    int n = 0;
    if (f && fscanf(f, "%d", &n) != 1) n = -1;
    if (f) pclose(f);
    return n;
}

static void test_write_is_deterministic(void) {
    EXPECT(system("rm -rf build/test-out/sim_a build/test-out/sim_b") == 0, "rm");
    const char *a[] = {"doppel-loader", "--synthetic", "--users", "4", "--per-user", "3", "--resolution", "32", "--seed", "5",
                       "--write", "build/test-out/sim_a", NULL};
    const char *b[] = {"doppel-loader", "--synthetic", "--users", "4", "--per-user", "3", "--resolution", "32", "--seed", "5",
                       "--write", "build/test-out/sim_b", NULL};
    EXPECT(proc_run(a, 60, NULL, NULL) == 0 && proc_run(b, 60, NULL, NULL) == 0, "write failed");
    EXPECT(count_pngs("build/test-out/sim_a") == 12, "%d PNGs written, want 12", count_pngs("build/test-out/sim_a"));
    EXPECT(system("diff -r build/test-out/sim_a build/test-out/sim_b >/dev/null") == 0, "same seed, different files");
    // the written set reads back as a dataset: same users and counts
    char *out;
    int rc = proc_run((const char *[]){"doppel-loader", "--data", "build/test-out/sim_a", "--stats", NULL}, 30, &out, NULL);
    EXPECT(rc == 0 && strstr(out, "\"users\": 4") && strstr(out, "\"samples\": 12") && strstr(out, "\"channels\": 1"),
           "stats of the written set: %s", out);
    free(out);
}

// a consumer that gets garbage keeps serving: bad frames are reported and skipped
static void test_bad_frames_skipped(void) {
    char bind[64], conn[64], err[256];
    int port = free_port();
    ep(bind, sizeof(bind), "@", port), ep(conn, sizeof(conn), ">", port);
    void *push = zsock_open(ZMQ_PUSH, bind, 1, err, sizeof(err));
    EXPECT(push, "%s", err);
    if (!push) return;
    Proc cat;
    proc_start(&cat, (const char *[]){"doppel-cat", "--in", conn, "--timeout", "30", NULL});
    const char *garbage[] = {"not msgpack at all", "\x81\xa1v\x02", "\x93\x01\x02\x03", "\xdb\xff\xff\xff\xff"};
    for (int i = 0; i < 4; i++) zmq_send(push, garbage[i], strlen(garbage[i]), 0);
    float img[2 * 1 * 4 * 4] = {0};
    int32_t label[2] = {0, 1};
    int64_t seed[2] = {10, 11};
    Frame f;
    frame_init(&f, FRAME_BATCH, "test", 0);
    frame_add_tensor(&f, "image", WDT_F32, 4, (int64_t[]){2, 1, 4, 4}, img);
    frame_add_tensor(&f, "label", WDT_I32, 1, (int64_t[]){2}, label);
    frame_add_tensor(&f, "seed", WDT_I64, 1, (int64_t[]){2}, seed);
    EXPECT(zsock_send_frame(push, &f, 5000, err, sizeof(err)) == 0, "%s", err);
    frame_release(&f);
    frame_init(&f, FRAME_END, "test", 1);
    f.has_total = 1, f.total = 2;
    EXPECT(zsock_send_frame(push, &f, 5000, err, sizeof(err)) == 0, "%s", err);
    frame_release(&f);
    int rc = proc_wait(&cat, 30);
    char *out = proc_read(cat.out), *e = proc_read(cat.err);
    EXPECT(rc == 0 && strstr(out, "samples=2 expected=2 bad=4"), "rc %d, summary %s", rc, out);
    EXPECT(strstr(e, "bad frame skipped"), "stderr: %s", e);
    free(out), free(e);
    zsock_close(&push);
}

// the Python example receives the stream as numpy arrays
static void test_python_example(void) {
    if (system("/usr/bin/python3 -c 'import numpy, msgpack, msgpack_numpy, zmq' 2>/dev/null") != 0) {
        tl_skip("/usr/bin/python3 lacks numpy/msgpack/msgpack-numpy/pyzmq (Debian python3-numpy python3-msgpack "
                "python3-msgpack-numpy python3-zmq)");
        return;
    }
    char bind[64], conn[64];
    int port = free_port();
    ep(bind, sizeof(bind), "@", port), ep(conn, sizeof(conn), ">", port);
    Proc py, loader;
    proc_start(&py, (const char *[]){"/usr/bin/python3", "tools/stream_numpy.py", conn, "--timeout", "60", "--save",
                                     "build/test-out/stream.npz", NULL});
    proc_start(&loader, (const char *[]){"doppel-loader", "--synthetic", "--users", "2", "--per-user", "5", "--resolution",
                                         "16", "--batch", "4", "--out", bind, NULL});
    int rl = proc_wait(&loader, 60), rp = proc_wait(&py, 60);
    char *out = proc_read(py.out), *err = proc_read(py.err);
    EXPECT(rl == 0 && rp == 0, "loader %d, python %d: %s", rl, rp, err);
    EXPECT(strstr(out, "image float32[4, 1, 16, 16]") && strstr(out, "end: 8 samples announced, 8 received") &&
           strstr(out, "saved 8 images"), "python said: %s", out);
    free(out), free(err);
    char *chk;
    int rc = proc_run((const char *[]){"/usr/bin/python3", "-c",
                                       "import numpy as n; d = n.load('build/test-out/stream.npz'); "
                                       "print(d['image'].shape, d['label'].tolist(), list(d['users']), "
                                       "float(d['image'].min()) >= -1, float(d['image'].max()) <= 1)",
                                       NULL},
                       30, &chk, NULL);
    EXPECT(rc == 0 && strstr(chk, "(8, 1, 16, 16)") && strstr(chk, "['ID_1', 'ID_2'] True True"), "npz: %s", chk);
    free(chk);
}

static void test_real_gait10(void) {
    struct stat st;
    if (stat(GAIT10, &st) || !S_ISDIR(st.st_mode)) {
        tl_skip("%s is absent (the real radar data sits beside the checkout)", GAIT10);
        return;
    }
    char *out, *err;
    int rc = proc_run((const char *[]){"doppel-loader", "--data", GAIT10, "--stats", NULL}, 120, &out, &err);
    EXPECT(rc == 0, "stats rc %d: %s", rc, err);
    json_error_t je;
    json_t *j = json_loads(out, 0, &je);
    EXPECT(j, "stats are not JSON: %s", je.text);
    if (j) {
        EXPECT(json_integer_value(json_object_get(j, "channels")) == 1, "gait10 should be read as jet -> 1 channel: %s",
               json_string_value(json_object_get(j, "channels_reason")));
        json_t *per = json_object_get(j, "per_user");
        int total = 0;
        for (size_t u = 0; u < json_array_size(per); u++) {  // counts agree with the folders
            json_t *e = json_array_get(per, u);
            char dir[512];
            snprintf(dir, sizeof(dir), "%s/%s", GAIT10, json_string_value(json_object_get(e, "user")));
            int files = 0;
            DIR *d = opendir(dir);
            for (struct dirent *de; d && (de = readdir(d));) files += strstr(de->d_name, ".jpg") != NULL;
            if (d) closedir(d);
            int tr = (int)json_integer_value(json_object_get(e, "train")), va = (int)json_integer_value(json_object_get(e, "val"));
            EXPECT(tr + va == files && va == (int)(files * 0.2 + 0.5), "%s: %d train + %d val vs %d files", dir, tr, va, files);
            total += files;
            printf("  %-6s train %3d val %3d\n", json_string_value(json_object_get(e, "user")), tr, va);
        }
        EXPECT(json_array_size(per) == 10 && total == json_integer_value(json_object_get(j, "samples")), "users/samples");
        json_decref(j);
    }
    free(out), free(err);
    // throughput: decode + invert + resize every image, stream to a consumer
    char bind[64], conn[64];
    int port = free_port();
    ep(bind, sizeof(bind), "@", port), ep(conn, sizeof(conn), ">", port);
    Proc loader, cat;
    proc_start(&cat, (const char *[]){"doppel-cat", "--in", conn, "--quiet", "--timeout", "120", NULL});
    proc_start(&loader, (const char *[]){"doppel-loader", "--data", GAIT10, "--resolution", "64", "--batch", "32",
                                         "--split", "all", "--out", bind, NULL});
    int rl = proc_wait(&loader, 300), rc2 = proc_wait(&cat, 60);
    char *lerr = proc_read(loader.err), *cout = proc_read(cat.out);
    EXPECT(rl == 0 && rc2 == 0 && strstr(cout, "samples=957 expected=957"), "real stream: loader %d cat %d: %s", rl, rc2, cout);
    const char *line = strstr(lerr, "sent ");
    printf("  gait10 at 64x64: %.*s\n", line ? (int)strcspn(line, "\n") : 0, line ? line : "");
    free(lerr), free(cout);
}

int main(void) {
    RUN(test_cli);
    RUN(test_loader_to_cat);
    RUN(test_fan_out_fan_in);
    RUN(test_write_is_deterministic);
    RUN(test_bad_frames_skipped);
    RUN(test_python_example);
    RUN(test_real_gait10);
    return tl_finish();
}

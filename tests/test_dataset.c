// test_dataset.c: the dataset rules: natural file order, per-user val split by file order,
// folder scanning and its errors, simulated sets, and the time-shift augmentation.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "data/dataset.h"
#include "io/fileio.h"
#include "testlib.h"

static void test_natural_order(void) {
    EXPECT(natural_compare("Doppler2", "Doppler10") < 0, "2 < 10");
    EXPECT(natural_compare("Doppler10", "Doppler9") > 0, "10 > 9");
    EXPECT(natural_compare("ID1_case1_1_Doppler007", "ID1_case1_1_Doppler7") == 0, "leading zeros");
    EXPECT(natural_compare("a1b2", "a1b10") < 0, "several numbers");
    EXPECT(natural_compare("abc", "abd") < 0 && natural_compare("ab", "abc") < 0, "plain text");
}

static void touch(const char *path) {
    FILE *f = fopen(path, "w");
    if (f) fclose(f);
}

static void test_scan_and_split(void) {
    char err[512];
    EXPECT(system("rm -rf build/test-out/ds && mkdir -p build/test-out/ds/ID_10 build/test-out/ds/ID_2 "
                  "build/test-out/ds/ID_x build/test-out/ds/other") == 0, "mkdir");
    const char *files[] = {"ID_2/s_Doppler10.jpg", "ID_2/s_Doppler2.jpg", "ID_2/s_Doppler1.png", "ID_2/notes.txt",
                           "ID_2/s_Doppler3.bmp", "ID_2/s_Doppler4.JPEG", "ID_10/a1.jpg", "ID_10/a2.jpg", "ID_x/z.jpg"};
    char path[256];
    for (size_t i = 0; i < sizeof(files) / sizeof(*files); i++) {
        snprintf(path, sizeof(path), "build/test-out/ds/%s", files[i]);
        touch(path);
    }
    Dataset ds;
    EXPECT(dataset_scan(&ds, "build/test-out/ds", err, sizeof(err)) == 0, "%s", err);
    EXPECT(ds.n_users == 2 && !strcmp(ds.users[0], "ID_2") && !strcmp(ds.users[1], "ID_10"), "users sorted by n");
    EXPECT(ds.n_samples == 7, "%d images (txt and ID_x ignored)", ds.n_samples);
    const char *want[] = {"s_Doppler1", "s_Doppler2", "s_Doppler3", "s_Doppler4", "s_Doppler10", "a1", "a2"};
    for (int i = 0; i < 7 && i < ds.n_samples; i++)
        EXPECT(!strcmp(ds.samples[i].name, want[i]), "sample %d is %s, want %s", i, ds.samples[i].name, want[i]);
    dataset_split(&ds, 0.4);  // ID_2: 5 files -> last 2 val; ID_10: 2 files -> last 1 val
    int *idx, nv = dataset_select(&ds, SPLIT_VAL, &idx);
    EXPECT(nv == 3 && !strcmp(ds.samples[idx[0]].name, "s_Doppler4") && !strcmp(ds.samples[idx[1]].name, "s_Doppler10") &&
               !strcmp(ds.samples[idx[2]].name, "a2"), "val split: %d", nv);
    free(idx);
    int nt = dataset_select(&ds, SPLIT_TRAIN, &idx);
    free(idx);
    int na = dataset_select(&ds, SPLIT_ALL, &idx);
    free(idx);
    EXPECT(nt == 4 && na == 7, "train %d all %d", nt, na);
    dataset_split(&ds, 0.01);  // a tiny fraction still gives every user one val file
    nv = dataset_select(&ds, SPLIT_VAL, &idx);
    free(idx);
    EXPECT(nv == 2, "val with fraction 0.01: %d", nv);
    dataset_free(&ds);

    EXPECT(dataset_scan(&ds, "build/test-out/nope", err, sizeof(err)) == -1 && strstr(err, "build/test-out/nope"), "%s", err);
    EXPECT(dataset_scan(&ds, "build/test-out/ds/other", err, sizeof(err)) == -1 && strstr(err, "ID_<n>"), "%s", err);
    EXPECT(system("mkdir -p build/test-out/ds/ID_3") == 0, "mkdir");
    EXPECT(dataset_scan(&ds, "build/test-out/ds", err, sizeof(err)) == -1 && strstr(err, "ID_3") && strstr(err, "no images"),
           "%s", err);
}

static void test_synthetic(void) {
    Dataset a, b;
    dataset_synthetic(&a, 4, 3, 9);
    dataset_synthetic(&b, 4, 3, 9);
    EXPECT(a.n_users == 4 && a.n_samples == 12 && !strcmp(a.users[3], "ID_4"), "layout");
    int same = 1, distinct = 1;
    for (int i = 0; i < 12; i++) {
        same &= a.samples[i].sim_seed == b.samples[i].sim_seed;
        for (int j = 0; j < i; j++) distinct &= a.samples[i].sim_seed != a.samples[j].sim_seed;
    }
    EXPECT(same && distinct, "sample seeds: deterministic %d, distinct %d", same, distinct);
    Preprocess pp = {16, 1, CMAP_JET};
    float x[256], y[256];
    char err[256];
    EXPECT(preprocess_sample(&a, 5, &pp, x, err, sizeof(err)) == 0 && preprocess_sample(&b, 5, &pp, y, err, sizeof(err)) == 0,
           "%s", err);
    EXPECT(!memcmp(x, y, sizeof(x)), "same sample, same pixels");
    float lo = 1, hi = -1;
    for (int i = 0; i < 256; i++) lo = x[i] < lo ? x[i] : lo, hi = x[i] > hi ? x[i] : hi;
    EXPECT(lo >= -1 && hi <= 1 && hi > lo, "range [%g, %g]", lo, hi);
    dataset_free(&a), dataset_free(&b);
}

static void test_time_shift(void) {
    float x[2 * 3 * 5], tmp[5];
    for (int i = 0; i < 30; i++) x[i] = (float)i;
    augment_time_shift(x, 2, 3, 5, 2, tmp);
    // row 0 of channel 0 was 0 1 2 3 4, shifted right by 2 with wrap: 3 4 0 1 2
    EXPECT(x[0] == 3 && x[1] == 4 && x[2] == 0 && x[4] == 2, "row 0: %g %g %g %g %g", x[0], x[1], x[2], x[3], x[4]);
    EXPECT(x[25] == 28 && x[27] == 25, "last row follows the same shift");
    augment_time_shift(x, 2, 3, 5, -2, tmp);  // and back: nothing lost, Doppler rows untouched
    for (int i = 0; i < 30; i++) EXPECT(x[i] == (float)i, "x[%d] = %g after shifting back", i, x[i]);
}

int main(void) {
    RUN(test_natural_order);
    RUN(test_scan_and_split);
    RUN(test_synthetic);
    RUN(test_time_shift);
    return tl_finish();
}

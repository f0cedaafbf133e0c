#include "dataset.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "../check.h"
#include "../rng.h"
#include "../sim/walker.h"

int split_parse(const char *s, Split *out) {
    if (!strcmp(s, "train")) *out = SPLIT_TRAIN;
    else if (!strcmp(s, "val")) *out = SPLIT_VAL;
    else if (!strcmp(s, "all")) *out = SPLIT_ALL;
    else return -1;
    return 0;
}

const char *split_name(Split s) { return s == SPLIT_TRAIN ? "train" : s == SPLIT_VAL ? "val" : "all"; }

// digits compare as numbers, everything else byte-wise: "Doppler2" < "Doppler10"
int natural_compare(const char *a, const char *b) {
    while (*a && *b) {
        if (isdigit((unsigned char)*a) && isdigit((unsigned char)*b)) {
            while (*a == '0') a++;
            while (*b == '0') b++;
            size_t la = 0, lb = 0;
            while (isdigit((unsigned char)a[la])) la++;
            while (isdigit((unsigned char)b[lb])) lb++;
            if (la != lb) return la < lb ? -1 : 1;
            int c = strncmp(a, b, la);
            if (c) return c;
            a += la, b += lb;
        } else {
            if (*a != *b) return (unsigned char)*a < (unsigned char)*b ? -1 : 1;
            a++, b++;
        }
    }
    return *a ? 1 : *b ? -1 : 0;
}

static int is_image_name(const char *name) {
    const char *dot = strrchr(name, '.');
    if (!dot || name[0] == '.') return 0;
    return !strcasecmp(dot, ".jpg") || !strcasecmp(dot, ".jpeg") || !strcasecmp(dot, ".png") || !strcasecmp(dot, ".bmp");
}

// "ID_<n>" -> n, or -1
static long user_number(const char *name) {
    if (strncmp(name, "ID_", 3) || !isdigit((unsigned char)name[3])) return -1;
    char *end;
    long n = strtol(name + 3, &end, 10);
    return *end ? -1 : n;
}

typedef struct {
    long n;
    char *name;
} UserDir;

static int cmp_user(const void *a, const void *b) {
    long x = ((const UserDir *)a)->n, y = ((const UserDir *)b)->n;
    return (x > y) - (x < y);
}

static int cmp_str_natural(const void *a, const void *b) { return natural_compare(*(char *const *)a, *(char *const *)b); }

int dataset_scan(Dataset *ds, const char *dir, char *err, size_t errlen) {
    memset(ds, 0, sizeof(*ds));
    DIR *d = opendir(dir);
    if (!d) return errf(err, errlen, "cannot open data folder %s: %s", dir, strerror(errno));
    UserDir *users = NULL;
    int n_users = 0, cap = 0;
    struct dirent *e;
    char path[4096];
    while ((e = readdir(d))) {
        long n = user_number(e->d_name);
        if (n < 0) continue;
        struct stat st;
        snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
        if (stat(path, &st) || !S_ISDIR(st.st_mode)) continue;
        if (n_users == cap) users = xrealloc(users, (size_t)(cap = cap ? 2 * cap : 32) * sizeof(*users));
        users[n_users++] = (UserDir){n, xstrdup(e->d_name)};
    }
    closedir(d);
    if (!n_users) {
        free(users);
        return errf(err, errlen, "%s has no ID_<n> folders; expected DIR/ID_1/*.jpg, DIR/ID_2/*.jpg, ...", dir);
    }
    qsort(users, (size_t)n_users, sizeof(*users), cmp_user);
    ds->dir = xstrdup(dir);
    ds->n_users = n_users;
    ds->users = xcalloc((size_t)n_users, sizeof(char *));
    int scap = 0, rc = 0;
    for (int u = 0; u < n_users; u++) {
        ds->users[u] = users[u].name;
        snprintf(path, sizeof(path), "%s/%s", dir, users[u].name);
        DIR *ud = opendir(path);
        char **names = NULL;
        int nn = 0, ncap = 0;
        if (ud) {
            while ((e = readdir(ud))) {
                if (!is_image_name(e->d_name)) continue;
                if (nn == ncap) names = xrealloc(names, (size_t)(ncap = ncap ? 2 * ncap : 64) * sizeof(char *));
                names[nn++] = xstrdup(e->d_name);
            }
            closedir(ud);
        }
        if (!nn) {
            rc = errf(err, errlen, "%s has no images (.jpg, .jpeg, .png, .bmp)", path);
            free(names);
            for (int v = u + 1; v < n_users; v++) ds->users[v] = users[v].name;
            break;
        }
        qsort(names, (size_t)nn, sizeof(char *), cmp_str_natural);
        for (int i = 0; i < nn; i++) {
            if (ds->n_samples == scap)
                ds->samples = xrealloc(ds->samples, (size_t)(scap = scap ? 2 * scap : 1024) * sizeof(Sample));
            Sample *s = &ds->samples[ds->n_samples++];
            memset(s, 0, sizeof(*s));
            char full[8192];
            snprintf(full, sizeof(full), "%s/%s", path, names[i]);
            s->path = xstrdup(full);
            *strrchr(names[i], '.') = 0;
            s->name = names[i];
            s->user = u;
        }
        free(names);
    }
    free(users);
    if (rc) dataset_free(ds);
    return rc;
}

void dataset_synthetic(Dataset *ds, int n_users, int per_user, uint64_t seed) {
    memset(ds, 0, sizeof(*ds));
    ds->sim_seed = seed;
    ds->n_users = n_users;
    ds->users = xcalloc((size_t)n_users, sizeof(char *));
    ds->n_samples = n_users * per_user;
    ds->samples = xcalloc((size_t)ds->n_samples, sizeof(Sample));
    char buf[64];
    for (int u = 0; u < n_users; u++) {
        snprintf(buf, sizeof(buf), "ID_%d", u + 1);
        ds->users[u] = xstrdup(buf);
        for (int k = 0; k < per_user; k++) {
            Sample *s = &ds->samples[u * per_user + k];
            snprintf(buf, sizeof(buf), "ID%d_sim_%d", u + 1, k + 1);
            s->name = xstrdup(buf);
            s->user = u;
            Rng r;  // one independent stream per (seed, user, sample)
            rng_seed(&r, seed ^ (0x9e3779b97f4a7c15ULL * (uint64_t)(u + 1)) ^ ((uint64_t)(k + 1) << 32));
            s->sim_seed = rng_u64(&r);
        }
    }
}

void dataset_split(Dataset *ds, double val_fraction) {
    for (int i = 0; i < ds->n_samples;) {
        int j = i;
        while (j < ds->n_samples && ds->samples[j].user == ds->samples[i].user) j++;
        int n = j - i, n_val = (int)(n * val_fraction + 0.5);
        if (val_fraction > 0 && n_val == 0 && n > 1) n_val = 1;  // every user gets a val sample
        if (n_val >= n && val_fraction < 1) n_val = n - 1;      // ... and keeps a train sample
        for (int k = i; k < j; k++) ds->samples[k].val = k >= j - n_val;
        i = j;
    }
}

int dataset_select(const Dataset *ds, Split split, int **idx) {
    int n = 0;
    *idx = xmalloc((size_t)(ds->n_samples ? ds->n_samples : 1) * sizeof(int));
    for (int i = 0; i < ds->n_samples; i++)
        if (split == SPLIT_ALL || ds->samples[i].val == (split == SPLIT_VAL)) (*idx)[n++] = i;
    return n;
}

void dataset_free(Dataset *ds) {
    for (int u = 0; u < ds->n_users; u++) free(ds->users[u]);
    for (int i = 0; i < ds->n_samples; i++) free(ds->samples[i].path), free(ds->samples[i].name);
    free(ds->users);
    free(ds->samples);
    free(ds->dir);
    memset(ds, 0, sizeof(*ds));
}

int dataset_guess_channels(const Dataset *ds, Colormap *cmap, char *why, size_t whylen) {
    *cmap = CMAP_JET;
    if (!ds->dir) {
        snprintf(why, whylen, "simulated spectrograms are magnitudes: 1 channel");
        return 1;
    }
    // JPEG chroma subsampling smears colours at the speckle's edges, so the fit is taken with a
    // loose tolerance; real jet spectrograms score ~0.93 for jet and ~0.1 for viridis there.
    const float tol = 0.2f, need = 0.85f;
    int rgb = 0, gray = 0, looked = 0, fits[2] = {0, 0};
    const Colormap maps[2] = {CMAP_JET, CMAP_VIRIDIS};
    char err[256];
    for (int k = 0; k < 8 && k < ds->n_samples; k++) {
        Image im = {0};
        int i = (int)((long)k * ds->n_samples / 8);
        if (image_read(ds->samples[i].path, &im, err, sizeof(err))) continue;
        looked++;
        if (im.C == 1) gray++;
        else {
            rgb++;
            double f0 = colormap_fit(maps[0], &im, tol), f1 = colormap_fit(maps[1], &im, tol);
            if (f0 > need && f0 > f1) fits[0]++;
            else if (f1 > need && f1 > f0) fits[1]++;
        }
        image_free(&im);
    }
    for (int m = 0; m < 2; m++)
        if (rgb && fits[m] == rgb) {
            *cmap = maps[m];
            snprintf(why, whylen, "%d of %d sampled images are %s-coloured: inverting the colour map to 1 channel", fits[m],
                     looked, colormap_name(maps[m]));
            return 1;
        }
    if (!rgb && gray) {
        snprintf(why, whylen, "sampled images are grayscale: 1 channel");
        return 1;
    }
    snprintf(why, whylen, "%d of %d sampled RGB images follow neither jet nor viridis: keeping 3 channels",
             rgb - fits[0] - fits[1], rgb);
    return 3;
}

int preprocess_sample(const Dataset *ds, int index, const Preprocess *pp, float *out, char *err, size_t errlen) {
    const Sample *s = &ds->samples[index];
    int R = pp->resolution;
    size_t plane = (size_t)R * R;
    if (!s->path) {  // simulated: magnitude in [0, 1]
        WalkerTraits t;
        walker_traits(&t, ds->sim_seed, s->user);
        RadarConfig rc = radar_default();
        walker_spectrogram(out, R, R, &t, &rc, s->sim_seed);
        for (int c = pp->channels - 1; c >= 0; c--)
            for (size_t i = 0; i < plane; i++) out[c * plane + i] = 2.0f * out[i] - 1.0f;
        return 0;
    }
    Image im = {0}, mag = {0}, sized = {0};
    if (image_read(s->path, &im, err, errlen)) return -1;
    const Image *src = &im;
    if (pp->channels == 1 && im.C == 3) {
        if (colormap_invert(pp->cmap, &im, &mag)) {
            image_free(&im);
            return errf(err, errlen, "%s: colour map inversion failed", s->path);
        }
        src = &mag;
    }
    int rc = 0;
    if (image_resize(src, &sized, R, R, RESIZE_AUTO)) {
        rc = errf(err, errlen, "%s: cannot resize %dx%d to %dx%d", s->path, src->W, src->H, R, R);
    } else {
        for (int c = 0; c < pp->channels; c++) {
            const float *p = sized.data + (size_t)(sized.C == 1 ? 0 : c) * plane;  // gray -> RGB repeats
            for (size_t i = 0; i < plane; i++) out[c * plane + i] = 2.0f * p[i] - 1.0f;
        }
    }
    image_free(&im), image_free(&mag), image_free(&sized);
    return rc;
}

void augment_time_shift(float *x, int C, int H, int W, int shift, float *tmp) {
    shift = ((shift % W) + W) % W;
    for (int c = 0; c < C; c++)
        for (int h = 0; h < H; h++) {
            float *row = x + ((size_t)c * H + h) * W;
            for (int w = 0; w < W; w++) tmp[(w + shift) % W] = row[w];
            memcpy(row, tmp, (size_t)W * sizeof(float));
        }
}

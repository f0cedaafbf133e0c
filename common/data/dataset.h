// dataset.h: spectrogram folders in the layout DIR/ID_<n>/*.{jpg,jpeg,png,bmp}, and the
// simulated equivalent. Users are sorted by n and keep their index everywhere (the index <-> name
// table travels in every frame's meta). Splits are per user, by file order: the last
// val_fraction of each user's files, in natural order of their names (Doppler2 < Doppler10),
// is `val`; users are never split between train and val.
#pragma once
#include <stddef.h>
#include <stdint.h>

#include "../image/image.h"

typedef enum { SPLIT_TRAIN = 0, SPLIT_VAL = 1, SPLIT_ALL = 2 } Split;

typedef struct {
    char *path;    // NULL for simulated samples
    char *name;    // file name without extension, or "ID<n>_sim_<k>"
    int user;      // index into users
    int val;       // 1 if in the val split
    uint64_t sim_seed;  // simulated samples: the simulator's sample seed
} Sample;

typedef struct {
    char *dir;       // NULL when simulated
    char **users;    // "ID_1", ... sorted by n
    int n_users;
    Sample *samples; // grouped by user, each user's in natural order
    int n_samples;
    uint64_t sim_seed;  // simulated sets: the seed the users' traits and samples come from
} Dataset;

int split_parse(const char *s, Split *out);
const char *split_name(Split s);
// scans DIR; errors for a missing folder, no ID_<n> folders, or a user without images
int dataset_scan(Dataset *ds, const char *dir, char *err, size_t errlen);
// n_users users x per_user samples of the built-in simulator, deterministic from seed
void dataset_synthetic(Dataset *ds, int n_users, int per_user, uint64_t seed);
void dataset_split(Dataset *ds, double val_fraction);
// indices of the samples in a split (malloc'd); returns the count
int dataset_select(const Dataset *ds, Split split, int **idx);
void dataset_free(Dataset *ds);
int natural_compare(const char *a, const char *b);

// Preprocessing: a sample -> (C, R, R) floats in [-1, 1].
typedef struct {
    int resolution;
    int channels;   // 1: magnitude (colour map inverted for RGB inputs); 3: RGB as is
    Colormap cmap;  // map used to invert RGB spectrograms when channels == 1
} Preprocess;

// Looks at up to 8 images: jet-coloured RGB -> channels 1 with jet; gray -> 1; other RGB -> 3.
// Returns the channel count it would pick and sets *cmap; fills why with a one-line reason.
int dataset_guess_channels(const Dataset *ds, Colormap *cmap, char *why, size_t whylen);
// Training augmentation that respects the physics: a circular shift along time (the W axis) by
// `shift` columns. The Doppler axis is never flipped (that would reverse walking direction).
// x (C, H, W); tmp holds W floats.
void augment_time_shift(float *x, int C, int H, int W, int shift, float *tmp);
int preprocess_sample(const Dataset *ds, int index, const Preprocess *pp, float *out, char *err, size_t errlen);

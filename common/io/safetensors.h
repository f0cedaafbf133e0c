// safetensors.h: reader and writer for the safetensors format
// (8-byte little-endian header length, JSON header, raw little-endian tensor bytes).
// The reader trusts nothing: header size limit, JSON shape, dtype names, shapes vs byte ranges,
// offsets inside the file, contiguous and non-overlapping, no bytes left over. Every failure
// returns -1 with a message in `err`; nothing aborts.
#pragma once
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#define ST_MAX_HEADER (100u << 20)  // 100 MB, as the Rust reference implementation
#define ST_MAX_DIMS 8

typedef enum { ST_F32, ST_F16, ST_BF16, ST_F64, ST_I8, ST_U8, ST_I16, ST_I32, ST_I64, ST_BOOL } StDtype;

typedef struct {
    char *name;
    StDtype dtype;
    int ndim;
    int64_t shape[ST_MAX_DIMS];
    size_t numel;
    size_t nbytes;
    size_t offset;     // of the bytes, from the start of the data section
    const void *data;  // points into SafeTensors.buf; NULL after st_open. May be unaligned.
} StTensor;

typedef struct {
    StTensor *tensors;
    int count;
    char **meta_keys, **meta_vals;  // "__metadata__" (string -> string)
    int meta_count;
    void *buf;                      // owned file contents (NULL after st_open)
    size_t size;                    // of the whole file
    size_t data_start;              // 8 + header length: where the data section begins
    FILE *fp;                       // st_open only: the open file, read by st_read_tensor
    char *path;                     // st_open only
} SafeTensors;

const char *st_dtype_name(StDtype t);  // "F32", ...
size_t st_dtype_size(StDtype t);
// On failure st is left empty (st_free on it is a no-op). Messages start with "file PATH: "
// (st_load, st_open) or "safetensors buffer: " (st_parse).
int st_parse(SafeTensors *st, const void *bytes, size_t size, char *err, size_t errlen);  // copies bytes
int st_load(SafeTensors *st, const char *path, char *err, size_t errlen);
void st_free(SafeTensors *st);
const StTensor *st_find(const SafeTensors *st, const char *name);
const char *st_meta(const SafeTensors *st, const char *key);
// Converts any float/int dtype to float32 into out (numel floats).
void st_to_f32(float *out, const StTensor *t);
void st_bytes_to_f32(float *out, const void *bytes, StDtype dtype, size_t numel);  // same, raw bytes

// Header only, for checkpoints larger than one wants to hold twice in memory: validates the
// whole header against the file's size exactly as st_load does, keeps the file open (until
// st_free) and leaves every tensor's data NULL; st_read_tensor then reads one tensor's nbytes
// straight into dst (it also works after st_load/st_parse, copying from memory).
int st_open(SafeTensors *st, const char *path, char *err, size_t errlen);
int st_read_tensor(const SafeTensors *st, const StTensor *t, void *dst, char *err, size_t errlen);

typedef struct {
    const char *name;
    StDtype dtype;
    int ndim;
    int64_t shape[ST_MAX_DIMS];
    const void *data;
} StEntry;

// Writes atomically (PATH.tmp.<pid>, fsync, rename). meta: key/value pairs, n_meta pairs.
int st_save(const char *path, const StEntry *entries, int n, const char *const *meta_kv, int n_meta,
            char *err, size_t errlen);

// frame.h: encode and strictly decode protocol-v1 frames (protocol.h) with msgpack-c.
// Decoding is zero-copy: tensor data points into the received bytes, which must outlive the Frame.
// Every rule violation returns -1 with a message naming the rule; nothing aborts.
// Encoding writes exactly what Python's msgpack_numpy writes (tensor keys are msgpack bin); decoding
// also accepts tensor keys (and "type"/"kind" values) as msgpack str, as clients without
// msgpack_numpy may send them. Unknown keys, at the top or in a tensor, are rejected.
#pragma once
#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "protocol.h"

typedef enum { FRAME_BATCH, FRAME_END, FRAME_ERROR, FRAME_REQUEST, FRAME_REPLY, FRAME_HELLO } FrameKind;
typedef enum { WDT_F32, WDT_F16, WDT_U8, WDT_I32, WDT_I64 } WireDtype;  // "<f4" "<f2" "|u1" "<i4" "<i8"

typedef struct {
    char name[WIRE_MAX_NAME + 1];
    WireDtype dtype;
    int ndim;
    int64_t shape[WIRE_MAX_DIMS];
    size_t numel, nbytes;
    const void *data;  // decode: into the message (may be unaligned: memcpy or wire_tensor_f32)
} WireTensor;

typedef struct {
    FrameKind kind;
    char stream[WIRE_MAX_NAME + 1];
    uint64_t seq;
    int has_total;
    uint64_t total;
    json_t *meta;  // NULL if absent; a JSON object (msgpack maps/arrays/str/int/float/bool/nil)
    int n_tensors;
    WireTensor tensors[WIRE_MAX_TENSORS];
} Frame;

const char *frame_kind_name(FrameKind k);
const char *wire_dtype_name(WireDtype t);  // "<f4", ...
size_t wire_dtype_size(WireDtype t);

// ---- building and encoding ----
// stream: at most WIRE_MAX_NAME bytes (validate names read from outside; a longer one aborts)
void frame_init(Frame *f, FrameKind kind, const char *stream, uint64_t seq);
// adds a tensor (data is referenced, not copied, until frame_encode); -1 if full or bad shape
int frame_add_tensor(Frame *f, const char *name, WireDtype dtype, int ndim, const int64_t *shape, const void *data);
// the frame takes its own reference (json_incref; frame_release drops it): the caller still owns
// meta and decrefs it when done, so one meta can go out with many frames. NULL clears it.
void frame_set_meta(Frame *f, json_t *meta);
// encodes into a malloc'd buffer (*out, *len); the caller frees it (or hands it to zmq_msg_init_data)
int frame_encode(const Frame *f, void **out, size_t *len, char *err, size_t errlen);

// ---- decoding ----
typedef struct {
    size_t max_bytes;  // 0: WIRE_MAX_FRAME_BYTES
    int allow_nonfinite;  // float tensors may hold NaN/Inf (default: rejected)
} FrameLimits;
// lim may be NULL (defaults). On failure f is left empty (frame_release is a no-op) and err starts
// with "frame: ".
int frame_decode(Frame *f, const void *buf, size_t len, const FrameLimits *lim, char *err, size_t errlen);
void frame_release(Frame *f);  // drops meta; tensors keep pointing into the buffer
const WireTensor *frame_tensor(const Frame *f, const char *name);
// the standard batch rules: image/latent (N,C,H,W) <f4, label (N,) <i4, seed (N,) <i8, same N; each
// is optional but one at least must be there; other tensors are not checked
int frame_check_batch(const Frame *f, char *err, size_t errlen);
// copies a tensor to float32 (any dtype)
void wire_tensor_f32(float *out, const WireTensor *t);

// protocol.h: every constant of doppel's wire protocol, version 1 (../shared/DESIGN.md).
// One ZeroMQ message = one frame = one msgpack map:
//   {"v": 1, "kind": "batch"|"end"|"error"|"request"|"reply"|"hello", "stream": str, "seq": uint,
//    "total": uint (optional), "meta": map (optional), "tensors": {name: TENSOR} (optional)}
// TENSOR is msgpack-numpy's encoding (keys are msgpack bin):
//   {b"nd": true, b"type": "<f4"|"<f2"|"|u1"|"<i4"|"<i8", b"kind": b"", b"shape": [..], b"data": bin}
#pragma once

#define WIRE_VERSION 1

// limits a receiver enforces (a frame beyond them is rejected, never allocated)
#define WIRE_MAX_FRAME_BYTES ((size_t)512 << 20)  // also ZMQ_MAXMSGSIZE on every socket
#define WIRE_MAX_TENSORS 16
#define WIRE_MAX_DIMS 8
#define WIRE_MAX_DEPTH 16          // nesting of maps/arrays anywhere in a frame
#define WIRE_MAX_NAME 64           // tensor names and the stream name, bytes
#define WIRE_MAX_META_ITEMS 65536  // total map/array entries inside meta

// kinds
#define WIRE_KIND_BATCH "batch"
#define WIRE_KIND_END "end"
#define WIRE_KIND_ERROR "error"
#define WIRE_KIND_REQUEST "request"
#define WIRE_KIND_REPLY "reply"
#define WIRE_KIND_HELLO "hello"

// standard tensor names
#define WIRE_IMAGE "image"    // (N, C, H, W) <f4 in [-1, 1]
#define WIRE_LATENT "latent"  // (N, 4, h, w) <f4, already multiplied by the VAE scaling factor
#define WIRE_LABEL "label"    // (N,) <i4 user index
#define WIRE_SEED "seed"      // (N,) <i8

// socket settings
#define WIRE_HWM 4            // frames queued per peer: a few batches, never zmq's default 1000
#define WIRE_LINGER_MS 2000   // how long close() waits to deliver queued frames

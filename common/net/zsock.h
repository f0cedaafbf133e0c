// zsock.h: ZeroMQ the way every doppel stage uses it.
// Endpoints follow CZMQ: "@tcp://127.0.0.1:5555" binds, ">tcp://host:5555" connects, a bare
// endpoint takes the caller's default. Every socket gets WIRE_HWM, WIRE_LINGER_MS and
// ZMQ_MAXMSGSIZE. SIGINT/SIGTERM set a flag (no SA_RESTART) so blocking waits return; waits are
// zmq_poll loops that check it.
#pragma once
#include <stddef.h>
#include <stdint.h>

#include "../wire/frame.h"

void zsock_install_signals(void);  // SIGINT, SIGTERM -> zsock_interrupted(); SIGPIPE ignored
int zsock_interrupted(void);

void *zsock_context(void);  // one per process, created on first use
void zsock_term(void);      // closes the context (after every socket is closed)
// Tests only: ZMQ_MAXMSGSIZE for sockets opened from now on (bytes; 0 restores WIRE_MAX_FRAME_BYTES),
// so the "oversized message is dropped" rule can be tested without a 512 MB message.
void zsock_set_maxmsgsize(int64_t bytes);

// type: ZMQ_PUSH, ZMQ_PULL, ZMQ_PUB, ZMQ_SUB (subscribed to everything), ZMQ_REQ, ZMQ_REP,
// ZMQ_DEALER, ZMQ_ROUTER. default_bind applies to a bare endpoint. Returns NULL + err.
void *zsock_open(int type, const char *endpoint, int default_bind, char *err, size_t errlen);
void zsock_close(void **sock);      // sets *sock = NULL
// the endpoint actually bound (resolves "tcp://127.0.0.1:*" to the ephemeral port)
int zsock_last_endpoint(void *sock, char *buf, size_t len);

// Sends one frame (encoded here; the buffer is handed to zmq without a copy). Returns 0, or -1
// with err (interrupted, or timeout_ms elapsed without the peer taking it; -1 waits forever).
int zsock_send_frame(void *sock, const Frame *f, int timeout_ms, char *err, size_t errlen);

// A received frame and the message that holds its bytes (tensors point into it).
typedef struct {
    Frame frame;
    void *msg;  // zmq_msg_t, owned
} Received;
// Waits up to timeout_ms (-1 forever) for a frame. Returns 1 with a decoded frame, 0 on timeout
// or interruption, -1 for a bad frame (err says why; the caller reports it and goes on).
int zsock_recv_frame(void *sock, Received *r, const FrameLimits *lim, int timeout_ms, char *err, size_t errlen);
void received_release(Received *r);
// waits on several sockets; returns the index of one that is readable, -1 on timeout/interrupt
int zsock_poll_in(void **socks, int n, int timeout_ms);

// Counts the peers that finished the ZMTP handshake with a socket (ZMQ_EVENT_HANDSHAKE_SUCCEEDED on
// a socket monitor: only then does a PUSH socket include the peer in its round robin; a TCP accept
// alone is too early). zsock_open_watched attaches the monitor before it binds or connects, so a
// peer that is already waiting for the endpoint is counted too.
typedef struct {
    void *sock, *mon;  // the watched socket (not owned) and the monitor's PAIR socket
    int peers;         // handshakes seen so far
} PeerWatch;
void *zsock_open_watched(int type, const char *endpoint, int default_bind, PeerWatch *w, char *err, size_t errlen);
// Waits until n handshakes in all have been seen. Returns 0, or -1 on timeout (timeout_ms, -1 forever)
// or interruption.
int peerwatch_wait(PeerWatch *w, int n, int timeout_ms);
void peerwatch_stop(PeerWatch *w);  // detaches and closes the monitor; the socket stays open

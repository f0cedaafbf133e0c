// stream.c: image batches from a PULL socket (doppel-loader, doppel-decoder, ...), with the end of
// stream rule of docs/protocol.md: done once the end frame and end.seq batch frames have arrived.
#include <string.h>
#include <zmq.h>

#include "check.h"
#include "cli/cli.h"
#include "validator.h"

#define POLL_MS 200

int istream_open(ImageStream *s, const char *endpoint, int timeout_s, char *err, size_t errlen) {
    memset(s, 0, sizeof(*s));
    s->endpoint = endpoint;
    s->timeout_s = timeout_s;
    s->end_seq = -1;
    s->why = "end";
    s->sock = zsock_open(ZMQ_PULL, endpoint, 0, err, errlen);
    return s->sock ? 0 : -1;
}

void istream_close(ImageStream *s) {
    if (s->have) received_release(&s->r), s->have = 0;
    if (s->sock) {
        int linger = 0;
        zmq_setsockopt(s->sock, ZMQ_LINGER, &linger, sizeof(linger));
        zsock_close(&s->sock);
    }
    json_decref(s->users), json_decref(s->meta);
    s->users = s->meta = NULL;
}

int istream_next(ImageStream *s, const WireTensor **img, const WireTensor **label) {
    char err[512];
    double last = cli_now();
    for (;;) {
        if (s->have) received_release(&s->r), s->have = 0;
        if (s->end_seq >= 0 && s->batches >= s->end_seq) return s->why = "end", 0;
        if (zsock_interrupted()) return s->why = "interrupt", 0;
        if (s->end_seq >= 0 && cli_now() - s->end_at > END_GRACE_S) {
            fprintf(stderr, MSG "%s: the end frame announced %lld batches but %lld arrived within %.0f s; going on "
                                "without the rest\n", s->endpoint, s->end_seq, s->batches, END_GRACE_S);
            return s->why = "incomplete", 0;
        }
        if (s->timeout_s && cli_now() - last > s->timeout_s) {
            fprintf(stderr, MSG "no frame for %d s on %s; giving up\n", s->timeout_s, s->endpoint);
            return s->why = "timeout", 0;
        }
        int rc = zsock_recv_frame(s->sock, &s->r, NULL, POLL_MS, err, sizeof(err));
        if (rc < 0) {
            fprintf(stderr, MSG "bad frame skipped on %s: %s\n", s->endpoint, err);
            s->bad++;
            continue;
        }
        if (rc == 0) continue;
        s->have = 1;
        last = cli_now();
        Frame *f = &s->r.frame;
        if (f->kind == FRAME_END) {
            s->end_seq = (long long)f->seq, s->end_at = cli_now();
            continue;
        }
        if (f->kind != FRAME_BATCH) {
            fprintf(stderr, MSG "ignoring a '%s' frame on %s\n", frame_kind_name(f->kind), s->endpoint);
            continue;
        }
        s->batches++;
        json_t *u = f->meta ? json_object_get(f->meta, "users") : NULL;
        if (json_is_array(u)) json_decref(s->users), s->users = json_deep_copy(u);
        if (!s->meta && f->meta) s->meta = json_deep_copy(f->meta);
        err[0] = 0;
        if (frame_check_batch(f, err, sizeof(err)) || !(*img = frame_tensor(f, WIRE_IMAGE))) {
            fprintf(stderr, MSG "batch #%llu skipped: %s\n", (unsigned long long)f->seq, *err ? err : "no 'image' tensor");
            s->bad++;
            continue;
        }
        *label = frame_tensor(f, WIRE_LABEL);
        s->images += (*img)->shape[0];
        return 1;
    }
}

#!/usr/bin/env python3
"""Receive a doppel stream in Python and get numpy arrays: the one-liner is
`msgpack.unpackb(frame, object_hook=msgpack_numpy.decode)`.

    doppel-loader --synthetic --users 5 --per-user 20 --out @tcp://127.0.0.1:5555 &
    python3 tools/stream_numpy.py '>tcp://127.0.0.1:5555' --save batches.npz

Needs numpy, msgpack, msgpack-numpy and pyzmq (Debian: python3-numpy python3-msgpack
python3-msgpack-numpy python3-zmq). Endpoints: '>' connects (default), '@' binds; --sub reads a
published stream (doppel-decoder --pub).
"""
import argparse
import sys

import msgpack
import msgpack_numpy
import numpy as np
import zmq


def open_socket(ctx, endpoint, sub):
    sock = ctx.socket(zmq.SUB if sub else zmq.PULL)
    if sub:
        sock.setsockopt(zmq.SUBSCRIBE, b"")
    sock.setsockopt(zmq.RCVHWM, 4)
    if endpoint.startswith("@"):
        sock.bind(endpoint[1:])
    else:
        sock.connect(endpoint.lstrip(">"))
    return sock


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("endpoint", nargs="?", default=">tcp://127.0.0.1:5555")
    ap.add_argument("--sub", action="store_true", help="subscribe to a published stream")
    ap.add_argument("--save", help="write all image/label/seed arrays to this .npz at the end")
    ap.add_argument("--timeout", type=float, default=0, help="give up after this many seconds without a frame")
    args = ap.parse_args()
    ctx = zmq.Context()
    sock = open_socket(ctx, args.endpoint, args.sub)
    images, labels, seeds, users = [], [], [], None
    n = 0
    while True:
        if args.timeout and not sock.poll(int(args.timeout * 1000)):
            sys.exit(f"no frame for {args.timeout} s")
        frame = msgpack.unpackb(sock.recv(), object_hook=msgpack_numpy.decode)
        meta = frame.get("meta", {})
        users = meta.get("users", users)
        if frame["kind"] == "batch":
            t = frame["tensors"]
            shapes = ", ".join(f"{k} {v.dtype}{list(v.shape)}" for k, v in t.items())
            print(f"batch {frame['seq']}: {shapes}")
            if "image" in t:
                images.append(t["image"])
                labels.append(t.get("label", np.full(len(t["image"]), -1, np.int32)))
                seeds.append(t.get("seed", np.arange(n, n + len(t["image"]))))
                n += len(t["image"])
        elif frame["kind"] == "end":
            print(f"end: {frame.get('total')} samples announced, {n} received")
            break
    if args.save and images:
        np.savez(args.save, image=np.concatenate(images), label=np.concatenate(labels), seed=np.concatenate(seeds),
                 users=np.array(users or []))
        print(f"saved {n} images to {args.save}")


if __name__ == "__main__":
    main()

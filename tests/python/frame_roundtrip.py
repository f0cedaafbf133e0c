#!/usr/bin/python3
"""Frames between doppel's C codec and Python's msgpack + msgpack_numpy (run by tests/test_frame.c).

Usage: /usr/bin/python3 tests/python/frame_roundtrip.py DIR

Reads DIR/c_all.bin and DIR/c_end.bin (written by frame_encode) and checks them three ways:
  * msgpack.unpackb(frame, object_hook=msgpack_numpy.decode), the way a Python stage reads them;
  * the plain-numpy one-liner np.frombuffer(t[b"data"], t[b"type"]).reshape(t[b"shape"]);
  * re-encoding the decoded frame with msgpack_numpy.encode gives back the very same bytes.
Then writes DIR/py_all.bin, DIR/py_end.bin (msgpack_numpy's encoding of the same frames) and
DIR/py_strkeys.bin (tensor maps with str keys, as a client without msgpack_numpy might send) for the
C side to decode. Exits non-zero, saying what differs, on any mismatch.

The content is defined twice, here and in tests/test_frame.c (all_specs, all_meta_json,
fill_pattern); element i (flat, C order) of each tensor is
  <f4 and <f2: (i - 3) * 0.5    |u1: (i * 37) % 256    <i4: (i - 3) * 100003    <i8: (i - 3) * 1000000007000
"""
import os
import sys

import msgpack
import msgpack_numpy
import numpy as np

SPECS = [  # name, dtype, shape: every dtype, a 0-element tensor, a 0-dim scalar, 8 dims
    ("f4", "<f4", (2, 3, 4)), ("f2", "<f2", (5,)), ("u1", "|u1", (2, 2, 3)), ("i4", "<i4", (7,)),
    ("i8", "<i8", (3, 1)), ("empty", "<f4", (2, 0, 3)), ("scalar", "<i8", ()), ("deep", "|u1", (1, 2, 1, 1, 1, 1, 2, 1)),
]
META = {"users": ["ID_1", "ID_2", "\u00fc"], "stage": "test", "n": -5, "big": 2 ** 40, "f": 0.1,
        "ok": True, "none": None, "nested": {"a": [1, [2, {"b": 3}]], "e": {}, "l": []}}


def pattern(dtype, shape):
    i = np.arange(int(np.prod(shape, dtype=np.int64)), dtype=np.int64)
    if dtype in ("<f4", "<f2"):
        v = (i - 3) * 0.5
    elif dtype == "|u1":
        v = (i * 37) % 256
    elif dtype == "<i4":
        v = (i - 3) * 100003
    else:
        v = (i - 3) * 1000000007000
    return v.astype(dtype).reshape(shape)


def frame_all(tensor=lambda a: a):
    return {"v": 1, "kind": "batch", "stream": "roundtrip", "seq": 3, "total": 10, "meta": META,
            "tensors": {name: tensor(pattern(dt, shape)) for name, dt, shape in SPECS}}


FRAME_END = {"v": 1, "kind": "end", "stream": "roundtrip", "seq": 11, "total": 10}


def same_array(got, want, what):
    if got.dtype != want.dtype or got.shape != want.shape or not np.array_equal(got, want):
        sys.exit(f"frame_roundtrip: {what}: got {got.dtype} {got.shape} {got.ravel()[:8]}, "
                 f"want {want.dtype} {want.shape} {want.ravel()[:8]}")


def check_c_frame(path, want):
    with open(path, "rb") as f:
        b = f.read()
    hooked = msgpack.unpackb(b, object_hook=msgpack_numpy.decode)
    raw = msgpack.unpackb(b)
    env = {k: v for k, v in want.items() if k != "tensors"}
    for d, how in ((hooked, "msgpack_numpy"), (raw, "plain msgpack")):
        got_env = {k: v for k, v in d.items() if k != "tensors"}
        if got_env != env:
            sys.exit(f"frame_roundtrip: {path} ({how}): envelope {got_env}, want {env}")
        if list(d) != list(want):
            sys.exit(f"frame_roundtrip: {path}: key order {list(d)}, want {list(want)}")
    for name, arr in want.get("tensors", {}).items():
        same_array(hooked["tensors"][name], arr, f"{path}: tensor {name} via msgpack_numpy.decode")
        t = raw["tensors"][name]
        if list(t) != [b"nd", b"type", b"kind", b"shape", b"data"]:
            sys.exit(f"frame_roundtrip: {path}: tensor {name} keys {list(t)}")
        plain = np.frombuffer(t[b"data"], t[b"type"]).reshape(t[b"shape"])
        same_array(plain, arr, f"{path}: tensor {name} via np.frombuffer")
    again = msgpack.packb(hooked, default=msgpack_numpy.encode)
    if again != b:
        sys.exit(f"frame_roundtrip: {path}: msgpack_numpy re-encodes {len(b)} bytes as {len(again)} different bytes")


def str_keys(a):
    return {"nd": True, "type": a.dtype.str, "kind": "", "shape": list(a.shape), "data": a.tobytes()}


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    d = sys.argv[1]
    check_c_frame(os.path.join(d, "c_all.bin"), frame_all())
    check_c_frame(os.path.join(d, "c_end.bin"), FRAME_END)
    out = {"py_all.bin": msgpack.packb(frame_all(), default=msgpack_numpy.encode),
           "py_strkeys.bin": msgpack.packb(frame_all(str_keys)),
           "py_end.bin": msgpack.packb(FRAME_END)}
    for name, b in out.items():
        with open(os.path.join(d, name), "wb") as f:
            f.write(b)
    print(f"frame_roundtrip: C frames read by msgpack_numpy and numpy; wrote {', '.join(out)}")


if __name__ == "__main__":
    main()

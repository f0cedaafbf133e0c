#!/usr/bin/python3
"""Writes the protocol-v1 frame corpus beside this script: /usr/bin/python3 make_corpus.py
(Debian's python: needs msgpack, msgpack_numpy, numpy).

ok_*.bin must decode; bad_*.bin must be rejected with a message (tests/test_frame.c replays all of
them, and after each one checks that a good frame still decodes; `make fuzz` starts from them).
Every file stays under 4 KB. Crashers found by fuzzing are added by hand as bad_fuzz_*.bin; files
libFuzzer keeps may go in fuzz/ (replayed too, either outcome allowed, never a crash)."""
import os
import struct

import msgpack
import msgpack_numpy
import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))


def pk(obj):
    return msgpack.packb(obj, default=msgpack_numpy.encode)


def env(kind="batch", **rest):
    d = {"v": 1, "kind": kind, "stream": "corpus", "seq": 0}
    d.update(rest)
    return d


def tensor(dtype, dims, **over):
    """msgpack_numpy's map for arange(prod(dims)), with fields overridden (nd=..., shape=..., data=...)."""
    a = np.arange(int(np.prod(dims)), dtype=np.int64).astype(dtype).reshape(dims)
    t = {b"nd": True, b"type": a.dtype.str, b"kind": b"", b"shape": list(dims), b"data": a.tobytes()}
    t.update({k.encode(): v for k, v in over.items()})
    return t


def raw_map(pairs):
    """A map from already-packed (key, value) byte pairs (for duplicates and odd headers)."""
    n = len(pairs)
    head = bytes([0x80 | n]) if n < 16 else b"\xde" + struct.pack(">H", n)
    return head + b"".join(k + v for k, v in pairs)


ENV_PAIRS = [(pk("v"), pk(1)), (pk("kind"), pk("batch")), (pk("stream"), pk("corpus")), (pk("seq"), pk(0))]

images = np.linspace(-1, 1, 2 * 3 * 4 * 4, dtype="<f4").reshape(2, 3, 4, 4)
batch = env(total=2, meta={"users": ["ID_1", "ID_2"], "stage": "loader"},
            tensors={"image": images, "label": np.array([0, 1], "<i4"), "seed": np.array([7, 8], "<i8")})
ok_batch = pk(batch)
all_dtypes = env(tensors={"f4": np.arange(6, dtype="<f4").reshape(2, 3), "f2": np.arange(4, dtype="<f2"),
                          "u1": np.arange(5, dtype="|u1"), "i4": np.arange(3, dtype="<i4") - 1,
                          "i8": np.arange(2, dtype="<i8") * 2 ** 40, "empty": np.zeros((2, 0, 3), "<f4"),
                          "scalar": np.array(5, "<i8")})
one = lambda t: pk(env(tensors={"x": t}))  # noqa: E731

cases = {
    "ok_batch": ok_batch,
    "ok_all_dtypes": pk(all_dtypes),
    "ok_end": pk(env("end", seq=9, total=9)),
    "ok_hello_meta": pk(env("hello", meta={"model": {"name": "unet", "blocks": [32, 64], "scale": 0.18215},
                                           "ok": True, "none": None, "neg": -3, "s": "\u00fc"})),
    "ok_error": pk(env("error", meta={"message": "bad frame 3 from worker 2"})),
    "ok_str_keys": pk(env(tensors={"x": {"nd": True, "type": "<f4", "kind": "", "shape": [2], "data": b"\0" * 8}})),
    "ok_reordered": pk({"seq": 1, "tensors": {}, "stream": "", "kind": "reply", "v": 1}),

    # byte level
    "bad_empty": b"",
    "bad_truncated": ok_batch[:-10],
    "bad_truncated_header": ok_batch[:3],
    "bad_truncated_in_data": ok_batch[:300],
    "bad_trailing": ok_batch + b"\x00",
    "bad_two_frames": ok_batch + ok_batch,
    "bad_reserved_c1": b"\x81\xa1v\xc1",
    "bad_not_map": pk([1, 2, 3]),
    "bad_scalar_top": pk(1),
    "bad_bin32_huge": raw_map(ENV_PAIRS + [(pk("tensors"), raw_map([(pk("x"), b"\x85\xc4\x02nd\xc3\xc4\x04type\xa3<f4\xc4\x04kind\xc4\x00"
                                                                      b"\xc4\x05shape\x91\x01\xc4\x04data\xc6\xff\xff\xff\xff\0\0\0\0")]))]),
    "bad_str32_huge": b"\x81\xdb\xff\xff\xff\xff" + b"v" * 40,
    "bad_map32_huge": b"\xdf\xff\xff\xff\xff" + b"".join(k + v for k, v in ENV_PAIRS),
    "bad_array32_huge_shape": raw_map(ENV_PAIRS + [(pk("tensors"), raw_map([(pk("x"), b"\x85\xc4\x02nd\xc3\xc4\x04type\xa3|u1\xc4\x04kind\xc4\x00"
                                                                             b"\xc4\x05shape\xdd\xff\xff\xff\xff\x01\xc4\x04data\xc4\x01\x00")]))]),
    "bad_array32_huge_meta": raw_map(ENV_PAIRS + [(pk("meta"), b"\x81\xa1a\xdd\x7f\xff\xff\xff\xc0\xc0")]),
    "bad_ext32_huge": raw_map(ENV_PAIRS + [(pk("meta"), b"\x81\xa1a\xc9\xff\xff\xff\xf0\x01")]),
    "bad_deep_meta": pk(env(meta={"d": [[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]})),
    "bad_deep_top": b"\x91" * 1000 + b"\xc0",

    # envelope
    "bad_version": pk({**env(), "v": 2}),
    "bad_version_str": pk({**env(), "v": "1"}),
    "bad_no_version": pk({k: v for k, v in env().items() if k != "v"}),
    "bad_kind": pk(env("batches")),
    "bad_kind_type": pk({**env(), "kind": 3}),
    "bad_no_kind": pk({k: v for k, v in env().items() if k != "kind"}),
    "bad_unknown_key": pk({**env(), "extra": 1}),
    "bad_duplicate_key": raw_map(ENV_PAIRS + [(pk("seq"), pk(1))]),
    "bad_key_not_str": raw_map(ENV_PAIRS + [(pk(7), pk(1))]),
    "bad_key_bin": raw_map(ENV_PAIRS[1:] + [(pk(b"v"), pk(1))]),
    "bad_stream_type": pk({**env(), "stream": 5}),
    "bad_stream_long": pk({**env(), "stream": "s" * 65}),
    "bad_no_seq": pk({k: v for k, v in env().items() if k != "seq"}),
    "bad_seq_negative": pk({**env(), "seq": -1}),
    "bad_seq_float": pk({**env(), "seq": 1.0}),
    "bad_total_negative": pk(env(total=-1)),
    "bad_meta_not_map": pk(env(meta=[1, 2])),
    "bad_meta_bin": pk(env(meta={"a": b"bytes"})),
    "bad_meta_ext": raw_map(ENV_PAIRS + [(pk("meta"), b"\x81\xa1a" + pk(msgpack.ExtType(5, b"xy")))]),
    "bad_meta_key_int": raw_map(ENV_PAIRS + [(pk("meta"), b"\x81\x01\x02")]),
    "bad_meta_utf8": raw_map(ENV_PAIRS + [(pk("meta"), b"\x81\xa1a\xa2\xc3\x28")]),
    "bad_meta_nan": pk(env(meta={"x": float("nan")})),
    "bad_meta_uint64": pk(env(meta={"x": 2 ** 64 - 1})),
    "bad_tensors_not_map": pk(env(tensors=[1])),
    "bad_too_many_tensors": pk(env(tensors={f"t{i}": np.zeros(1, "|u1") for i in range(17)})),
    "bad_tensor_name_long": pk(env(tensors={"n" * 65: np.zeros(1, "|u1")})),
    "bad_tensor_name_empty": pk(env(tensors={"": np.zeros(1, "|u1")})),
    "bad_tensor_name_bin": raw_map(ENV_PAIRS + [(pk("tensors"), raw_map([(pk(b"x"), pk(np.zeros(1, "|u1")))]))]),
    "bad_duplicate_tensor": raw_map(ENV_PAIRS + [(pk("tensors"), raw_map([(pk("x"), pk(np.zeros(1, "|u1")))] * 2))]),

    # tensors
    "bad_tensor_not_map": one(5),
    "bad_nd_false": one(np.float32(3.0)),  # msgpack_numpy's scalar encoding
    "bad_dtype_f8": one(np.arange(3, dtype="<f8")),
    "bad_dtype_big_endian": one(np.arange(3, dtype=">f4")),
    "bad_dtype_bool": one(np.zeros(3, bool)),
    "bad_structured": one(np.zeros(2, dtype=[("a", "<f4")])),
    "bad_tensor_missing_data": one({k: v for k, v in tensor("<f4", (2,)).items() if k != b"data"}),
    "bad_tensor_extra_key": one({**tensor("<f4", (2,)), b"extra": 1}),
    "bad_tensor_dup_key": raw_map(ENV_PAIRS + [(pk("tensors"), raw_map([(pk("x"), b"\x86\xc4\x02nd\xc3\xc4\x02nd\xc3\xc4\x04type\xa3|u1"
                                                                        b"\xc4\x04kind\xc4\x00\xc4\x05shape\x91\x01\xc4\x04data\xc4\x01\x00")]))]),
    "bad_shape_negative": one(tensor("<f4", (2,), shape=[-2])),
    "bad_shape_float": one(tensor("<f4", (2,), shape=[2.0])),
    "bad_shape_not_array": one(tensor("<f4", (2,), shape=2)),
    "bad_too_many_dims": one(tensor("|u1", (1,) * 9)),
    "bad_data_str": one(tensor("|u1", (2,), data="ab")),
    "bad_wrong_byte_length": one(tensor("<f4", (2, 3), data=b"\0" * 20)),
    "bad_wrong_byte_length_long": one(tensor("<i8", (2,), data=b"\0" * 24)),
    "bad_numel_overflow": one(tensor("<f4", (1,), shape=[2 ** 40, 2 ** 40], data=b"")),
    "bad_nbytes_overflow": one(tensor("<f4", (1,), shape=[2 ** 62], data=b"")),
    "bad_nan_f32": one(np.array([0.0, np.nan], "<f4")),
    "bad_inf_f32": one(np.array([-np.inf], "<f4")),
    "bad_nan_f16": one(np.array([1.0, 2.0, np.nan], "<f2")),
    "bad_inf_f16": one(np.array([np.inf], "<f2")),
}

for name, data in cases.items():
    assert len(data) < 4096, name
    with open(os.path.join(HERE, name + ".bin"), "wb") as f:
        f.write(data)
print(f"wrote {len(cases)} files to {HERE}")

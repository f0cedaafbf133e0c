#!/usr/bin/env python3
"""Writes the safetensors seed corpus beside this script (standard library only).
ok_*.safetensors must load; bad_*.safetensors must be rejected with a message (tests/test_safetensors.c
checks both; `make fuzz` starts from all of them). Crashers found by fuzzing are added by hand as bad_*."""
import json, os, struct

HERE = os.path.dirname(os.path.abspath(__file__))


def st(header, data=b"", pad=True, hlen=None):
    h = header if isinstance(header, bytes) else json.dumps(header, separators=(",", ":")).encode()
    if pad:
        h += b" " * (-len(h) % 8)
    return struct.pack("<Q", len(h) if hlen is None else hlen) + h + data


def t(dtype, shape, b, e):
    return {"dtype": dtype, "shape": shape, "data_offsets": [b, e]}


f16 = struct.pack("<4e", 1.0, -2.0, 65504.0, 2.0 ** -24)
cases = {
    "ok_small": st({"__metadata__": {"format": "pt"}, "w": t("F32", [2, 3], 0, 24), "h": t("F16", [4], 24, 32),
                    "s": t("I64", [], 32, 40), "e": t("U8", [0], 40, 40)},
                   struct.pack("<6f", *range(6)) + f16 + struct.pack("<q", -7)),
    "ok_empty": st({}),
    "bad_short": b"\x08\x00\x00\x00\x00",
    "bad_hlen_zero": struct.pack("<Q", 0) + b"{}",
    "bad_hlen_huge": struct.pack("<Q", 2 ** 64 - 1) + b"{}      ",
    "bad_hlen_past_end": st({}, hlen=64),
    "bad_not_json": st(b"{\"a\": [1, 2"),
    "bad_not_object": st([1, 2]),
    "bad_entry_not_object": st({"a": 5}),
    "bad_no_shape": st({"a": {"dtype": "F32", "data_offsets": [0, 4]}}, b"\0" * 4),
    "bad_unknown_dtype": st({"a": t("F99", [1], 0, 4)}, b"\0" * 4),
    "bad_shape_negative": st({"a": t("F32", [-1], 0, 4)}, b"\0" * 4),
    "bad_too_many_dims": st({"a": t("U8", [1] * 9, 0, 1)}, b"\0"),
    "bad_offsets_reversed": st({"a": t("U8", [0], 4, 0)}, b"\0" * 4),
    "bad_end_beyond": st({"a": t("F32", [4], 0, 16)}, b"\0" * 8),
    "bad_nbytes": st({"a": t("F32", [3], 0, 8)}, b"\0" * 8),
    "bad_numel_overflow": st({"a": t("F32", [2 ** 40, 2 ** 40], 0, 0)}),
    "bad_overlap": st({"a": t("F32", [2], 0, 8), "b": t("F32", [2], 4, 12)}, b"\0" * 12),
    "bad_gap": st({"a": t("F32", [1], 0, 4), "b": t("F32", [1], 8, 12)}, b"\0" * 12),
    "bad_trailing": st({"a": t("F32", [1], 0, 4)}, b"\0" * 8),
    "bad_metadata_value": st({"__metadata__": {"format": 1}}),
    "bad_duplicate_key": st(b'{"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},'
                            b'"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}}', b"\0"),
}
for name, data in cases.items():
    with open(os.path.join(HERE, name + ".safetensors"), "wb") as f:
        f.write(data)
print(f"wrote {len(cases)} files to {HERE}")

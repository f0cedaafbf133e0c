#!/usr/bin/env python3
"""Writes the image corpus beside this script (run with /usr/bin/python3; needs PIL for the JPEGs).
ok_* files must load, with the pixel values tests/test_image.c recomputes from the same formulas
(pattern8/pattern16/palette_rgb below); bad_* files must be rejected with a message naming the file.
PNGs and BMPs are written byte by byte here (standard library only), not by the code under test, so
the readers are checked against an independent writer; PIL then re-reads what it can as a cross-check.
Crashers found by fuzzing go in by hand as bad_*."""
import io, os, struct, zlib

HERE = os.path.dirname(os.path.abspath(__file__))
W, H = 7, 5  # odd sizes: row padding, partial bytes, Adam7 passes that are empty or short


def pattern8(x, y, c):
    return (x * 40 + y * 25 + c * 80 + 13) % 256


def pattern16(x, y, c):
    return (x * 9001 + y * 4099 + c * 21011 + 77) % 65536


def palette_rgb(i):
    return ((i * 16) % 256, 255 - (i * 16) % 256, (i * 77) % 256)


# ---------------------------------------------------------------- PNG, by hand

def chunk(kind, data, crc=None):
    c = zlib.crc32(kind + data) if crc is None else crc
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", c & 0xffffffff)


def ihdr(w, h, depth, ctype, interlace=0):
    return chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, depth, ctype, 0, 0, interlace))


SIG = b"\x89PNG\r\n\x1a\n"
CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}
ADAM7 = [(0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2)]


def pack_row(samples, depth):
    """samples: flat list of ints for one row -> bytes at this bit depth"""
    if depth == 16:
        return b"".join(struct.pack(">H", s) for s in samples)
    if depth == 8:
        return bytes(samples)
    out, acc, nbits = bytearray(), 0, 0
    for s in samples:
        acc = (acc << depth) | s
        nbits += depth
        if nbits == 8:
            out.append(acc)
            acc, nbits = 0, 0
    if nbits:
        out.append(acc << (8 - nbits))
    return bytes(out)


def scanlines(pix, w, h, depth, interlace):
    """pix(x, y) -> list of samples; returns the filtered (filter 0) image data"""
    if not interlace:
        return b"".join(b"\0" + pack_row([s for x in range(w) for s in pix(x, y)], depth) for y in range(h))
    out = b""
    for x0, y0, dx, dy in ADAM7:
        xs, ys = range(x0, w, dx), range(y0, h, dy)
        if not xs or not ys:
            continue
        out += b"".join(b"\0" + pack_row([s for x in xs for s in pix(x, y)], depth) for y in ys)
    return out


def png(w, h, depth, ctype, pix, interlace=0, extra=b"", plte=None, trns=None):
    body = ihdr(w, h, depth, ctype, interlace)
    if plte is not None:
        body += chunk(b"PLTE", plte)
    if trns is not None:
        body += chunk(b"tRNS", trns)
    body += extra + chunk(b"IDAT", zlib.compress(scanlines(pix, w, h, depth, interlace), 9))
    return SIG + body + chunk(b"IEND", b"")


def gray_sub8(depth, k):
    return lambda x, y: [(x + k * y) % (1 << depth)]


def ok_pngs():
    p8 = lambda C: (lambda x, y: [pattern8(x, y, c) for c in range(C)])
    p16 = lambda C: (lambda x, y: [pattern16(x, y, c) for c in range(C)])
    plte = b"".join(bytes(palette_rgb(i)) for i in range(256))
    return {
        "ok_gray1.png": png(11, H, 1, 0, gray_sub8(1, 1)),
        "ok_gray2.png": png(W, H, 2, 0, gray_sub8(2, 2)),
        "ok_gray4.png": png(W, H, 4, 0, gray_sub8(4, 3)),
        "ok_gray8.png": png(W, H, 8, 0, p8(1)),
        "ok_gray16.png": png(W, H, 16, 0, p16(1)),
        "ok_rgb8.png": png(W, H, 8, 2, p8(3)),
        "ok_rgb16.png": png(W, H, 16, 2, p16(3)),
        "ok_gray_alpha8.png": png(W, H, 8, 4, lambda x, y: [pattern8(x, y, 0), (x * y * 31) % 256]),
        "ok_gray_alpha16.png": png(W, H, 16, 4, lambda x, y: [pattern16(x, y, 0), (x * 977) % 65536]),
        "ok_rgba8.png": png(W, H, 8, 6, lambda x, y: [pattern8(x, y, c) for c in range(3)] + [(x + y) % 2 * 255]),
        "ok_rgba16.png": png(W, H, 16, 6, lambda x, y: [pattern16(x, y, c) for c in range(3)] + [0]),
        # palette index (x + 3y) % 16 at 4 bits, (x * 31 + y * 7) % 256 at 8 bits; tRNS must be ignored
        "ok_palette4.png": png(W, H, 4, 3, lambda x, y: [(x + 3 * y) % 16], plte=plte[:48], trns=bytes(range(0, 160, 10))),
        "ok_palette8.png": png(W, H, 8, 3, lambda x, y: [(x * 31 + y * 7) % 256], plte=plte),
        # Adam7 at 13 x 11: every pass non-empty, several partial
        "ok_interlaced_rgb8.png": png(13, 11, 8, 2, p8(3), interlace=1),
        "ok_interlaced_gray16.png": png(13, 11, 16, 0, p16(1), interlace=1),
        "ok_interlaced_gray1.png": png(13, 11, 1, 0, gray_sub8(1, 1), interlace=1),
        # a gray 8-bit image with text chunks before and after the image data and a bad-CRC
        # ancillary chunk (libpng drops it with a warning)
        "ok_chunks.png": png(W, H, 8, 0, p8(1), extra=chunk(b"tEXt", b"Comment\0hello") + chunk(b"zzZz", b"x", crc=0)),
    }


def bad_pngs():
    good = png(W, H, 8, 2, lambda x, y: [pattern8(x, y, c) for c in range(3)])
    idat_at = good.index(b"IDAT") - 4
    iend_at = good.index(b"IEND") - 4
    gray = lambda x, y: [0]
    zeros = zlib.compress(b"\0" * (W + 1) * H)
    return {
        "bad_empty.png": b"",
        "bad_signature.png": b"\x89PNG\r\n\x1a\x0b" + good[8:],
        "bad_sig_only.png": SIG,
        "bad_garbage.png": SIG + bytes((i * 97 + 13) % 256 for i in range(300)),
        "bad_text_not_png.png": b"this is not an image\n",
        "bad_truncated_idat.png": good[: idat_at + 20],
        "bad_no_iend.png": good[:iend_at],
        "bad_truncated_iend.png": good[:-3],
        "bad_idat_crc.png": good[: iend_at - 1] + bytes([good[iend_at - 1] ^ 1]) + good[iend_at:],
        "bad_ihdr_crc.png": SIG + chunk(b"IHDR", struct.pack(">IIBBBBB", W, H, 8, 2, 0, 0, 0), crc=1234) + good[33:],
        "bad_huge_dims.png": SIG + ihdr(1000000, 1000000, 8, 0) + chunk(b"IDAT", zeros) + chunk(b"IEND", b""),
        "bad_big_dims.png": SIG + ihdr(16000, 16000, 8, 0) + chunk(b"IDAT", zeros) + chunk(b"IEND", b""),
        "bad_dims_vs_size.png": SIG + ihdr(8000, 4000, 16, 2) + chunk(b"IDAT", zeros) + chunk(b"IEND", b""),
        "bad_zero_width.png": SIG + ihdr(0, H, 8, 0) + chunk(b"IDAT", zeros) + chunk(b"IEND", b""),
        "bad_bit_depth.png": png(W, H, 8, 0, gray)[:8] + ihdr(W, H, 3, 0) + png(W, H, 8, 0, gray)[33:],
        "bad_color_type.png": png(W, H, 8, 0, gray)[:8] + ihdr(W, H, 8, 5) + png(W, H, 8, 0, gray)[33:],
        "bad_no_idat.png": SIG + ihdr(W, H, 8, 0) + chunk(b"IEND", b""),
        "bad_no_plte.png": png(W, H, 8, 3, lambda x, y: [0]),
        "bad_zlib.png": SIG + ihdr(W, H, 8, 0) + chunk(b"IDAT", b"\x78\x9c" + bytes(range(40))) + chunk(b"IEND", b""),
        "bad_short_data.png": SIG + ihdr(W, H, 8, 0) + chunk(b"IDAT", zlib.compress(b"\0" * (W + 1) * 2)) + chunk(b"IEND", b""),
        "bad_filter_type.png": SIG + ihdr(W, H, 8, 0) + chunk(b"IDAT", zlib.compress(bytes([9] + [0] * W) * H)) + chunk(b"IEND", b""),
    }


# ---------------------------------------------------------------- BMP, by hand

def bmp(w, h, bpp, rows, palette=b"", info_size=40, colors=None, compression=0, planes=1, file_size=None,
        offset=None, image_size=0, extra=b""):
    """rows: list of h row payloads (unpadded, top row first); h < 0 writes top-down"""
    stride = (abs(w) * bpp + 31) // 32 * 4
    ordered = rows if h < 0 else rows[::-1]
    pixels = b"".join(r + b"\0" * (stride - len(r)) for r in ordered)
    ncol = len(palette) // 4 if colors is None else colors
    info = struct.pack("<IiiHHIIiiII", info_size, w, h, planes, bpp, compression, image_size, 2835, 2835, ncol, 0)
    info += b"\0" * (info_size - len(info))
    off = 14 + len(info) + len(palette) if offset is None else offset
    body = info + palette + b"\0" * max(0, off - 14 - len(info) - len(palette)) + pixels + extra
    size = 14 + len(body) if file_size is None else file_size
    return b"BM" + struct.pack("<IHHI", size, 0, 0, off) + body


def bgr_rows(w, h, bpp):
    return [b"".join(bytes([pattern8(x, y, 2), pattern8(x, y, 1), pattern8(x, y, 0)] + ([255] if bpp == 32 else []))
                     for x in range(w)) for y in range(h)]


def ok_bmps():
    pal = b"".join(bytes([b, g, r, 0]) for r, g, b in (palette_rgb(i) for i in range(16)))
    graypal = b"".join(bytes([v, v, v, 0]) for v in range(0, 256, 4))  # 64 grays
    idx = [bytes((x + 3 * y) % 16 for x in range(W)) for y in range(H)]
    gidx = [bytes((x * 9 + y * 5) % 64 for x in range(W)) for y in range(H)]
    return {
        "ok_bgr24.bmp": bmp(W, H, 24, bgr_rows(W, H, 24)),
        "ok_bgr24_topdown.bmp": bmp(W, -H, 24, bgr_rows(W, H, 24)),
        "ok_bgrx32.bmp": bmp(W, H, 32, bgr_rows(W, H, 32)),
        "ok_v5_bgr24.bmp": bmp(W, H, 24, bgr_rows(W, H, 24), info_size=124, image_size=((W * 24 + 31) // 32 * 4) * H),
        "ok_pal8.bmp": bmp(W, H, 8, idx, palette=pal),
        "ok_gray8.bmp": bmp(W, H, 8, gidx, palette=graypal),
    }


def bad_bmps():
    good = bmp(W, H, 24, bgr_rows(W, H, 24))
    pal = b"".join(bytes([i, 0, 0, 0]) for i in range(4))
    idx = [bytes((x + y) % 10 for x in range(W)) for y in range(H)]
    stride = (W * 24 + 31) // 32 * 4
    return {
        "bad_empty.bmp": b"",
        "bad_short.bmp": good[:30],
        "bad_signature.bmp": b"MB" + good[2:],
        "bad_file_size.bmp": good[:2] + struct.pack("<I", len(good) + 10) + good[6:],
        "bad_truncated.bmp": bmp(W, H, 24, bgr_rows(W, H, 24), file_size=len(good) - 8)[: len(good) - 8],
        "bad_offset.bmp": good[:10] + struct.pack("<I", 5000) + good[14:],
        "bad_offset_in_header.bmp": good[:10] + struct.pack("<I", 20) + good[14:],
        "bad_huge_width.bmp": bmp(W, H, 24, bgr_rows(W, H, 24))[:18] + struct.pack("<i", 100000) + good[22:],
        "bad_negative_width.bmp": good[:18] + struct.pack("<i", -W) + good[22:],
        "bad_zero_height.bmp": good[:22] + struct.pack("<i", 0) + good[26:],
        "bad_min_height.bmp": good[:22] + struct.pack("<i", -2 ** 31) + good[26:],
        "bad_bpp16.bmp": good[:28] + struct.pack("<H", 16) + good[30:],
        "bad_rle8.bmp": bmp(W, H, 8, idx, palette=pal * 64, compression=1),
        "bad_planes.bmp": good[:26] + struct.pack("<H", 2) + good[28:],
        "bad_os2_header.bmp": good[:14] + struct.pack("<I", 12) + good[18:],
        "bad_info_size.bmp": good[:14] + struct.pack("<I", 0xffffffff) + good[18:],
        "bad_palette_index.bmp": bmp(W, H, 8, idx, palette=pal),
        "bad_colors_used.bmp": bmp(W, H, 8, idx, palette=pal, colors=1000),
        "bad_palette_overlap.bmp": bmp(W, H, 8, idx, palette=pal * 64, offset=14 + 40 + 100),
        "bad_image_size.bmp": bmp(W, H, 24, bgr_rows(W, H, 24), image_size=stride * H - 1),
        "bad_image_size_past_end.bmp": bmp(W, H, 24, bgr_rows(W, H, 24), image_size=stride * H + 100),
    }


# ---------------------------------------------------------------- JPEG, through PIL

def smooth_rgb(x, y):
    """the ok_*.jpg content: smooth, so JPEG reproduces it within a few levels"""
    return (8 * x + 4, 10 * y + 5, 200 - 3 * x - 4 * y)


def ok_jpegs():
    from PIL import Image
    w, h = 32, 24
    rgb = Image.new("RGB", (w, h))
    rgb.putdata([smooth_rgb(x, y) for y in range(h) for x in range(w)])
    out = {}
    for name, img, kw in [("ok_rgb.jpg", rgb, {}), ("ok_progressive.jpg", rgb, {"progressive": True}),
                          ("ok_rgb444.jpeg", rgb, {"subsampling": 0}), ("ok_gray.jpg", rgb.convert("L"), {})]:
        b = io.BytesIO()
        img.save(b, "JPEG", quality=95, **kw)
        out[name] = b.getvalue()
    b = io.BytesIO()
    rgb.convert("CMYK").save(b, "JPEG", quality=95)
    out["bad_cmyk.jpg"] = b.getvalue()
    return out


def bad_jpegs(good, progressive):
    sof = good.index(b"\xff\xc0")
    sos = good.index(b"\xff\xda")
    scan = sos + 2 + struct.unpack(">H", good[sos + 2: sos + 4])[0]
    return {
        "bad_empty.jpg": b"",
        "bad_soi_only.jpg": b"\xff\xd8",
        "bad_soi_eoi.jpg": b"\xff\xd8\xff\xd9",
        "bad_garbage.jpg": b"\xff\xd8\xff" + bytes((i * 89 + 7) % 256 for i in range(400)),
        "bad_not_jpeg.jpg": b"GIF89a" + b"\0" * 40,
        "bad_truncated_header.jpg": good[: sof + 6],
        "bad_truncated_scan.jpg": good[: scan + (len(good) - scan) // 2],
        "bad_no_eoi.jpg": good[:-2],
        "bad_half_eoi.jpg": good[:-1],
        "bad_progressive_truncated.jpg": progressive[: len(progressive) * 2 // 3],
        "bad_huge_dims.jpg": good[: sof + 5] + struct.pack(">HH", 60000, 60000) + good[sof + 9:],
        "bad_zero_height.jpg": good[: sof + 5] + struct.pack(">H", 0) + good[sof + 7:],
        # an RST marker in the middle of a scan that has no restart interval
        "bad_marker_in_scan.jpg": good[: scan + 40] + b"\xff\xd3" + good[scan + 42:],
        "bad_no_huffman.jpg": good[:2] + good[sof:],
    }


def main():
    files = {}
    files.update(ok_pngs())
    files.update(bad_pngs())
    files.update(ok_bmps())
    files.update(bad_bmps())
    jp = ok_jpegs()
    files.update(jp)
    files.update(bad_jpegs(jp["ok_rgb.jpg"], jp["ok_progressive.jpg"]))
    for name, data in sorted(files.items()):
        with open(os.path.join(HERE, name), "wb") as f:
            f.write(data)
    check_with_pil()
    print(f"wrote {len(files)} files, {sum(map(len, files.values()))} bytes")


def check_with_pil():
    """PIL must read the ok_ PNGs and BMPs back to the formulas (checks this script's writer)"""
    from PIL import Image
    for name in sorted(os.listdir(HERE)):
        if not name.startswith("ok_") or name.endswith((".jpg", ".jpeg")) or name == "ok_chunks.png":  # PIL refuses its bad CRC
            continue
        im = Image.open(os.path.join(HERE, name))
        im.load()
        if name in ("ok_rgb8.png", "ok_interlaced_rgb8.png", "ok_bgr24.bmp", "ok_bgr24_topdown.bmp", "ok_bgrx32.bmp", "ok_v5_bgr24.bmp"):
            px = im.convert("RGB").load()
            for y in range(im.size[1]):
                for x in range(im.size[0]):
                    assert px[x, y] == tuple(pattern8(x, y, c) for c in range(3)), (name, x, y, px[x, y])
        if name == "ok_gray16.png" or name == "ok_interlaced_gray16.png":
            px = im.load()
            for y in range(im.size[1]):
                for x in range(im.size[0]):
                    assert px[x, y] == pattern16(x, y, 0), (name, x, y, px[x, y])


if __name__ == "__main__":
    main()

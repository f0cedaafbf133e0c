"""Block-level reference fixtures: tests/fixtures/block_*.safetensors.

Each file: parameters under the module's state_dict keys, inputs (x, temb, res.k for up blocks),
"out" (+ "res.k" outputs for down blocks), "dout" (+ "dres.k"), and "grad.<name>" for every input
and parameter, for L = sum(out*dout) (+ sum_k sum(res.k*dres.k)).
"""
import zlib

import torch
from diffusers.models.attention_processor import Attention
from diffusers.models.downsampling import Downsample2D
from diffusers.models.embeddings import TimestepEmbedding
from diffusers.models.resnet import ResnetBlock2D
from diffusers.models.unets.unet_2d_blocks import (
    AttnDownBlock2D,
    AttnUpBlock2D,
    DownBlock2D,
    DownEncoderBlock2D,
    UNetMidBlock2D,
    UpBlock2D,
    UpDecoderBlock2D,
)
from diffusers.models.upsampling import Upsample2D

from common import dot_loss, grads, params, randn, randomize, save


def build(name, cls, kwargs, *args):
    torch.manual_seed(zlib.crc32(name.encode()))
    m = cls(*args, **kwargs)
    randomize(m)
    m.eval()
    cfg = {"_class_name": cls.__name__}
    if args:
        cfg["args"] = list(args)
    cfg.update(kwargs)
    return m, cfg


def run(name, m, cfg, inputs, call):
    """call(**inputs) -> out tensor, or (out, tuple_of_res) for blocks with several outputs."""
    res = call(**inputs)
    t = dict(params(m))
    t.update(inputs)
    pairs = []
    if isinstance(res, tuple):
        out, extra = res
        cfg["num_res_outputs"] = len(extra)
        for k, r in enumerate(extra):
            d = torch.randn_like(r)
            t[f"res.{k}"] = r
            t[f"dres.{k}"] = d
            pairs.append((r, d))
    else:
        out = res
    dout = torch.randn_like(out)
    pairs.insert(0, (out, dout))
    t["out"] = out
    t["dout"] = dout
    t.update(grads(dot_loss(pairs), inputs, m))
    save(name, t, cfg)


def main():
    # ---- resnets ----
    n = "block_resnet_temb"
    m, cfg = build(n, ResnetBlock2D, dict(in_channels=8, out_channels=16, temb_channels=12, groups=4, eps=1e-5))
    run(n, m, cfg, {"x": randn(2, 8, 6, 6, grad=True), "temb": randn(2, 12, grad=True)}, lambda x, temb: m(x, temb))

    n = "block_resnet_notemb"
    m, cfg = build(n, ResnetBlock2D, dict(in_channels=8, out_channels=8, temb_channels=None, groups=4, eps=1e-6))
    run(n, m, cfg, {"x": randn(2, 8, 5, 6, grad=True)}, lambda x: m(x, None))

    n = "block_resnet_scale"
    m, cfg = build(n, ResnetBlock2D, dict(in_channels=8, out_channels=8, temb_channels=12, groups=4, eps=1e-5,
                                          output_scale_factor=2.0))
    run(n, m, cfg, {"x": randn(2, 8, 4, 4, grad=True), "temb": randn(2, 12, grad=True)}, lambda x, temb: m(x, temb))

    # ---- down/up samplers ----
    for n, pad in (("block_downsample_conv", 1), ("block_downsample_pad0", 0)):
        m, cfg = build(n, Downsample2D, dict(use_conv=True, out_channels=8, padding=pad, name="op"), 8)
        cfg["channels"] = 8
        run(n, m, cfg, {"x": randn(2, 8, 6, 6, grad=True)}, lambda x: m(x))

    n = "block_upsample"
    m, cfg = build(n, Upsample2D, dict(use_conv=True, out_channels=8), 8)
    cfg["channels"] = 8
    run(n, m, cfg, {"x": randn(2, 8, 3, 3, grad=True)}, lambda x: m(x))

    # ---- attention ----
    akw = dict(eps=1e-6, norm_num_groups=4, residual_connection=True, bias=True, upcast_softmax=True,
               _from_deprecated_attn_block=True)
    n = "block_attention"
    m, cfg = build(n, Attention, dict(heads=2, dim_head=8, rescale_output_factor=1.0, **akw), 16)
    cfg["query_dim"] = 16
    run(n, m, cfg, {"x": randn(2, 16, 3, 4, grad=True)}, lambda x: m(x))

    n = "block_attention_rescale"
    m, cfg = build(n, Attention, dict(heads=1, dim_head=16, rescale_output_factor=2.0, **akw), 16)
    cfg["query_dim"] = 16
    run(n, m, cfg, {"x": randn(2, 16, 4, 4, grad=True)}, lambda x: m(x))

    n = "block_timestep_embedding"
    m, cfg = build(n, TimestepEmbedding, dict(in_channels=16, time_embed_dim=32))
    run(n, m, cfg, {"x": randn(3, 16, grad=True)}, lambda x: m(x))

    # ---- VAE blocks ----
    n = "block_down_encoder"
    m, cfg = build(n, DownEncoderBlock2D, dict(in_channels=8, out_channels=16, num_layers=2, resnet_eps=1e-6,
                                               resnet_groups=4, add_downsample=True, downsample_padding=0))
    run(n, m, cfg, {"x": randn(2, 8, 8, 8, grad=True)}, lambda x: m(x))

    n = "block_up_decoder"
    m, cfg = build(n, UpDecoderBlock2D, dict(in_channels=16, out_channels=8, num_layers=2, resnet_eps=1e-6,
                                             resnet_groups=4, add_upsample=True, temb_channels=None))
    run(n, m, cfg, {"x": randn(2, 16, 4, 4, grad=True)}, lambda x: m(x))

    # ---- mid blocks ----
    n = "block_mid"
    m, cfg = build(n, UNetMidBlock2D, dict(in_channels=16, temb_channels=12, resnet_eps=1e-5, resnet_groups=4,
                                           attention_head_dim=8))
    run(n, m, cfg, {"x": randn(2, 16, 4, 4, grad=True), "temb": randn(2, 12, grad=True)}, lambda x, temb: m(x, temb))

    n = "block_mid_notemb"
    m, cfg = build(n, UNetMidBlock2D, dict(in_channels=16, temb_channels=None, resnet_eps=1e-6, resnet_groups=4,
                                           attention_head_dim=16, add_attention=True))
    run(n, m, cfg, {"x": randn(2, 16, 4, 4, grad=True)}, lambda x: m(x, None))

    # ---- UNet down blocks: out = hidden, res.k = output_states ----
    n = "block_down"
    m, cfg = build(n, DownBlock2D, dict(in_channels=8, out_channels=16, temb_channels=12, num_layers=2,
                                        resnet_eps=1e-5, resnet_groups=4, add_downsample=True, downsample_padding=1))
    run(n, m, cfg, {"x": randn(2, 8, 8, 8, grad=True), "temb": randn(2, 12, grad=True)}, lambda x, temb: m(x, temb))

    n = "block_attn_down"
    # AttnDownBlock2D has no add_downsample kwarg: downsample_type="conv" is what get_down_block passes
    # for add_downsample=True.
    m, cfg = build(n, AttnDownBlock2D, dict(in_channels=8, out_channels=16, temb_channels=12, num_layers=2,
                                            resnet_eps=1e-5, resnet_groups=4, attention_head_dim=8,
                                            downsample_type="conv", downsample_padding=1))
    run(n, m, cfg, {"x": randn(2, 8, 8, 8, grad=True), "temb": randn(2, 12, grad=True)}, lambda x, temb: m(x, temb))

    # ---- UNet up blocks: res.0..res.{L-1} = res_hidden_states_tuple (consumed from the end) ----
    def up_case(n, cls, kw):
        m, cfg = build(n, cls, kw)
        L, cin, cout = kw["num_layers"], kw["in_channels"], kw["out_channels"]
        # resnet i consumes tuple[-1-i], with res_skip_channels = in_channels if i == L-1 else out_channels
        skip = [cin if i == L - 1 else cout for i in range(L)]
        res_ch = list(reversed(skip))  # channels of tuple[0..L-1]
        cfg["res_channels"] = res_ch
        inputs = {"x": randn(2, kw["prev_output_channel"], 4, 4, grad=True)}
        for k, c in enumerate(res_ch):
            inputs[f"res.{k}"] = randn(2, c, 4, 4, grad=True)
        inputs["temb"] = randn(2, kw["temb_channels"], grad=True)

        def call(**a):
            tup = tuple(a[f"res.{k}"] for k in range(L))
            return m(a["x"], tup, a["temb"])

        run(n, m, cfg, inputs, call)

    up_case("block_up", UpBlock2D, dict(in_channels=8, prev_output_channel=16, out_channels=16, temb_channels=12,
                                         num_layers=3, resnet_eps=1e-5, resnet_groups=4, add_upsample=True))
    # AttnUpBlock2D has no add_upsample kwarg: upsample_type="conv" is what get_up_block passes.
    up_case("block_attn_up", AttnUpBlock2D, dict(in_channels=8, prev_output_channel=16, out_channels=16,
                                                 temb_channels=12, num_layers=3, resnet_eps=1e-5, resnet_groups=4,
                                                 attention_head_dim=8, upsample_type="conv"))


if __name__ == "__main__":
    main()

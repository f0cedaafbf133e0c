"""Shared helpers for the reference-fixture scripts (see README.md for the file format)."""
import json
import os

import torch
from safetensors.torch import save_file

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FIXTURES = os.path.join(REPO, "tests", "fixtures")


def randomize(module):
    """GroupNorm weight ~ 1 + 0.1 N(0,1), bias ~ 0.1 N(0,1); other parameters keep PyTorch's init."""
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, torch.nn.GroupNorm) and m.affine:
                m.weight.copy_(1.0 + 0.1 * torch.randn_like(m.weight))
                m.bias.copy_(0.1 * torch.randn_like(m.bias))
    return module


def _prep(t):
    t = t.detach().cpu()
    if t.is_floating_point():
        t = t.to(torch.float32)
    elif t.dtype in (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8, torch.bool):
        t = t.to(torch.int32)
    else:
        raise TypeError(f"unsupported dtype {t.dtype}")
    return t.contiguous().clone()


def save(name, tensors, cfg):
    """Write tests/fixtures/<name>.safetensors with the config JSON in the metadata."""
    os.makedirs(FIXTURES, exist_ok=True)
    out = {k: _prep(v) for k, v in tensors.items()}
    path = os.path.join(FIXTURES, name + ".safetensors")
    save_file(out, path, metadata={"config": json.dumps(cfg)})
    print(f"wrote {os.path.relpath(path, REPO)} ({len(out)} tensors, {os.path.getsize(path)} bytes)")
    return path


def params(module):
    """Parameters under their state_dict keys (detached copies)."""
    return {k: p.detach().clone() for k, p in module.named_parameters()}


def grads(loss, inputs=None, module=None):
    """dloss/d(inputs) and dloss/d(parameters) as {"grad.<name>": tensor}.

    inputs: {name: tensor requiring grad}; module: parameters are named by their state_dict keys.
    Anything the loss does not depend on gets a zero gradient.
    """
    named = list((inputs or {}).items())
    if module is not None:
        named += list(module.named_parameters())
    ts = [t for _, t in named]
    gs = torch.autograd.grad(loss, ts, allow_unused=True)
    res = {}
    for (n, t), g in zip(named, gs):
        res["grad." + n] = torch.zeros_like(t) if g is None else g
    return res


def dot_loss(pairs):
    """L = sum_k sum(out_k * dout_k) for pairs [(out_k, dout_k), ...]."""
    loss = 0.0
    for o, d in pairs:
        loss = loss + (o * d).sum()
    return loss


def randn(*shape, grad=False):
    t = torch.randn(*shape, dtype=torch.float32)
    if grad:
        t.requires_grad_(True)
    return t


def module_config(model):
    """JSON-serialisable copy of a diffusers model config."""
    cfg = {}
    for k, v in dict(model.config).items():
        if k.startswith("_"):
            continue
        cfg[k] = _jsonable(v)
    cfg["_class_name"] = type(model).__name__
    return cfg


def _jsonable(v):
    if isinstance(v, (tuple, list)):
        return [_jsonable(x) for x in v]
    if isinstance(v, dict):
        return {k: _jsonable(x) for k, x in v.items()}
    return v

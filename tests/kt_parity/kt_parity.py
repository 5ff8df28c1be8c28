#!/usr/bin/python3
"""kt_parity.py — checks moekd's knowledge-transfer losses against PyTorch (fp32).

Reads the safetensors file written by kt_parity_dump (inputs, moekd's losses and gradients),
recomputes each with the formulation a PyTorch user would write — F.kl_div(log_target=True) both
ways, F.kl_div(batchmean) * T^2, F.cross_entropy on the teacher argmax, F.cosine_similarity
matrices, torch.linalg.svdvals — and compares: relative 1e-5 on forward values, max |diff| /
max |ref| <= 1e-4 on gradients. Exit 0 when everything agrees, 1 otherwise.
Usage: /usr/bin/python3 kt_parity.py <file.safetensors>     (torch 1.13; no safetensors package)
"""
import json
import struct
import sys

import torch
import torch.nn.functional as F

DTYPES = {"F32": torch.float32, "F64": torch.float64, "I64": torch.int64, "U8": torch.uint8}


def read_safetensors(path):
    """The format: u64 little-endian header size, JSON header, raw little-endian data."""
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n].decode("utf-8"))
    meta = header.pop("__metadata__", {})
    base = 8 + n
    out = {}
    for name, info in header.items():
        begin, end = info["data_offsets"]
        buf = bytearray(data[base + begin:base + end])
        t = torch.frombuffer(buf, dtype=DTYPES[info["dtype"]]) if buf else torch.empty(0, dtype=DTYPES[info["dtype"]])
        out[name] = t.reshape(info["shape"]).clone()
    return out, meta


failures = []


def check(name, got, want, rtol):
    got, want = got.double(), want.detach().double()
    if got.shape != want.shape:
        failures.append(f"{name}: shape {tuple(got.shape)} vs torch {tuple(want.shape)}")
        return
    err = (got - want).abs().max().item() / max(want.abs().max().item(), 1e-30)
    status = "ok" if err <= rtol else "MISMATCH"
    print(f"{name:24s} rel_err={err:.2e} (tol {rtol:.0e}) {status}")
    if err > rtol:
        failures.append(f"{name}: rel_err {err:.3e} > {rtol:.0e}")


def leaf(t):
    return t.clone().requires_grad_(True)


def main(path):
    x, meta = read_safetensors(path)

    # symmetric KL (TSJT eq. 3), mean over non-pad tokens of the vocabulary sum
    a, b = leaf(x["symkl.a"]), leaf(x["symkl.b"])
    keep = x["symkl.pad_mask"] == 0
    la, lb = F.log_softmax(a, -1), F.log_softmax(b, -1)
    per_tok = (F.kl_div(lb, la, log_target=True, reduction="none").sum(-1)
               + F.kl_div(la, lb, log_target=True, reduction="none").sum(-1))
    loss = per_tok[keep].sum() / keep.sum()
    loss.backward()
    check("symkl.loss", x["symkl.loss"], loss, 1e-5)
    check("symkl.grad_a", x["symkl.grad_a"], a.grad, 1e-4)
    check("symkl.grad_b", x["symkl.grad_b"], b.grad, 1e-4)

    # soft distillation (OneS eq. 15): batchmean over the (rows, V) view, times T^2
    T = float(meta["soft.temperature"])
    s, t = leaf(x["soft.s"]), x["soft.t"]
    V = s.shape[-1]
    loss = F.kl_div(F.log_softmax(s / T, -1).reshape(-1, V), F.softmax(t / T, -1).reshape(-1, V),
                    reduction="batchmean") * T * T
    loss.backward()
    check("soft.loss", x["soft.loss"], loss, 1e-5)
    check("soft.grad_s", x["soft.grad_s"], s.grad, 1e-4)

    # hard distillation (OneS eq. 16)
    s = leaf(x["soft.s"])
    loss = F.cross_entropy(s.reshape(-1, V), t.argmax(-1).reshape(-1))
    loss.backward()
    check("hard.loss", x["hard.loss"], loss, 1e-5)
    check("hard.grad_s", x["hard.grad_s"], s.grad, 1e-4)

    # token relations (TCD eq. 6-8): cosine matrices per group, mean squared difference
    eps = float(meta["relation.eps"])
    s, t = leaf(x["relation.s"]), leaf(x["relation.t"])
    cs = F.cosine_similarity(s.unsqueeze(-2), s.unsqueeze(-3), dim=-1, eps=eps)
    ct = F.cosine_similarity(t.unsqueeze(-2), t.unsqueeze(-3), dim=-1, eps=eps)
    loss = ((cs - ct) ** 2).mean()
    loss.backward()
    check("relation.loss", x["relation.loss"], loss, 1e-5)
    check("relation.grad_s", x["relation.grad_s"], s.grad, 1e-4)
    check("relation.grad_t", x["relation.grad_t"], t.grad, 1e-4)

    # attention query-key relations (TCD eq. 9-11): cos(q_i, k_j) per head
    qs, ks, qt, kt = (leaf(x[k]) for k in ("qk.qs", "qk.ks", "qk.qt", "qk.kt"))
    cs = F.cosine_similarity(qs.unsqueeze(-2), ks.unsqueeze(-3), dim=-1, eps=eps)
    ct = F.cosine_similarity(qt.unsqueeze(-2), kt.unsqueeze(-3), dim=-1, eps=eps)
    loss = ((cs - ct) ** 2).mean()
    loss.backward()
    check("qk.loss", x["qk.loss"], loss, 1e-5)
    for name, v in (("qs", qs), ("ks", ks), ("qt", qt), ("kt", kt)):
        check(f"qk.grad_{name}", x[f"qk.grad_{name}"], v.grad, 1e-4)

    # singular values
    check("svd.S", x["svd.S"], torch.linalg.svdvals(x["svd.A"]), 1e-5)

    if failures:
        print("kt_parity: FAILED\n  " + "\n  ".join(failures))
        return 1
    print("kt_parity: all values agree with PyTorch")
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 2:
        print(__doc__)
        sys.exit(2)
    sys.exit(main(sys.argv[1]))

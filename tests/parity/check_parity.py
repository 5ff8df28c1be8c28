#!/usr/bin/python3
"""check_parity.py -- moekd::nn layers against PyTorch, from the files parity_dump writes.

For each <case>.safetensors in DIR: rebuild the layer in torch (torch_models.py, or
torch.nn.MultiheadAttention for the attention cases), load every parameter by its dotted name,
run the forward on the stored inputs, backward of L = sum(output * proj), and compare with the
stored moekd output and gradients.

Error measure (normwise relative, infinity norm), per tensor:
    rel = max_i |moekd_i - torch_i| / max(max_i |torch_i|, 1e-6)
Pass: output rel <= 1e-5, every parameter gradient and input gradient rel <= 1e-4 (float32 on
both sides). Any miss, any parameter name that does not match the torch model's state dict
(either way), or no case files at all, exits 1. One line per case and tensor.

The torch side also runs in float64, printed beside each line (how far moekd's float32 is from
the exact answer), and used to spot gradients that are zero in exact arithmetic: the key-bias
gradients of attention (softmax ignores a shift that is the same for every key of a query).
Both float32 sides hold only rounding noise there (~1e-8), so a relative error between them is
meaningless; for those, rel = max|moekd| / (largest |gradient| of the case, in float64), with
the same 1e-4 tolerance. A tensor counts as zero when its float64 max is <= 1e-10 of that scale.

Runs with Debian's /usr/bin/python3 + torch; the safetensors package is not needed (a small
reader is below). usage: check_parity.py DIR
"""
import json
import os
import struct
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import torch_models as tm  # noqa: E402

OUT_TOL, GRAD_TOL, FLOOR, ZERO = 1e-5, 1e-4, 1e-6, 1e-10
DTYPES = {"F32": torch.float32, "F64": torch.float64, "I64": torch.int64, "I32": torch.int32, "U8": torch.uint8}
INT_INPUTS = {"ids", "src", "prev", "input_ids", "token_type_ids"}


def read_safetensors(path):
    """Returns ({name: tensor}, metadata) from a safetensors file."""
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    meta = header.pop("__metadata__", {})
    buf = data[8 + n:]
    out = {}
    for name, e in header.items():
        begin, end = e["data_offsets"]
        dt = DTYPES[e["dtype"]]
        t = torch.frombuffer(bytearray(buf[begin:end]), dtype=dt) if end > begin else torch.empty(0, dtype=dt)
        out[name] = t.reshape(e["shape"])
    return out, meta


def rel_err(a, b):
    a, b = a.detach().double(), b.detach().double()
    if a.shape != b.shape:
        return float("inf")
    if a.numel() == 0:
        return 0.0
    return ((a - b).abs().max() / max(b.abs().max().item(), FLOOR)).item()


def default_params(model, names):
    """name -> (torch parameter view to load, function giving its gradient), by dotted name."""
    out = {}
    for n in names:
        p = model.get_parameter(n)
        out[n] = (p, (lambda p=p: p.grad))
    return out


def build(kind, c, dtype, mha_native=True):
    """Returns (model in dtype, forward(inputs) -> output, param map or None for default)."""
    model, fwd, pmap = _build(kind, c, dtype, mha_native)
    return model.to(dtype), fwd, pmap


def _build(kind, c, dtype, mha_native):
    if kind == "linear":
        m = torch.nn.Linear(c["in"], c["out"])
        return m, lambda i: m(i["x"]), None
    if kind == "embedding":
        m = torch.nn.Embedding(c["num"], c["dim"], padding_idx=c["padding_idx"])
        return m, lambda i: m(i["ids"]), None
    if kind == "layer_norm":
        m = torch.nn.LayerNorm(c["dim"], eps=c["eps"])
        return m, lambda i: m(i["x"]), None
    if kind == "mha" and mha_native:
        d = c["embed_dim"]
        m = torch.nn.MultiheadAttention(d, c["num_heads"], batch_first=True).to(dtype)  # before slicing
        causal = c.get("causal", False)

        def fwd(i):
            q = i.get("x", i.get("query"))
            k = i.get("x", i.get("key"))
            mask = torch.ones(q.shape[1], k.shape[1], dtype=torch.bool).triu(1) if causal else None
            return m(q, k, k, key_padding_mask=i.get("key_padding_mask"), attn_mask=mask, need_weights=False)[0]

        pm = {}
        for j, w in enumerate(["q_proj", "k_proj", "v_proj"]):
            sl = slice(j * d, (j + 1) * d)
            pm[w + ".weight"] = (m.in_proj_weight[sl], (lambda sl=sl: m.in_proj_weight.grad[sl]))
            pm[w + ".bias"] = (m.in_proj_bias[sl], (lambda sl=sl: m.in_proj_bias.grad[sl]))
        pm["out_proj.weight"] = (m.out_proj.weight, lambda: m.out_proj.weight.grad)
        pm["out_proj.bias"] = (m.out_proj.bias, lambda: m.out_proj.bias.grad)
        return m, fwd, pm
    if kind == "mha":  # the hand-written fairseq layout (used as a cross-check of torch_models.MHA)
        m = tm.MHA(c["embed_dim"], c["num_heads"])
        causal = c.get("causal", False)

        def fwd(i):
            q = i.get("x", i.get("query"))
            k = i.get("x", i.get("key"))
            return m(q, k, k, i.get("key_padding_mask"), causal)

        return m, fwd, None
    if kind == "ffn":
        m = tm.FeedForward(c["d_model"], c["ffn_dim"], c["activation"])
        return m, lambda i: m(i["x"]), None
    if kind == "adapter":
        m = tm.Adapter(c["dim"], c["bottleneck"], c["activation"])
        return m, lambda i: m(i["x"]), None
    if kind == "encoder_layer":
        m = tm.EncoderLayer(c)
        return m, lambda i: m(i["x"], i["key_padding_mask"]), None
    if kind == "decoder_layer":
        m = tm.DecoderLayer(c)
        return m, lambda i: m(i["x"], i["enc"], i["self_padding_mask"], i["enc_padding_mask"]), None
    if kind == "encoder_decoder":
        m = tm.EncoderDecoder(c)
        return m, lambda i: m(i["src"], i["prev"]), None
    if kind == "bert":
        m = tm.Bert(c)
        return m, lambda i: m(i["input_ids"], i["token_type_ids"], i["padding_mask"]), None
    if kind == "vit":
        m = tm.ViT(c)
        return m, lambda i: m(i["images"]), None
    raise SystemExit(f"check_parity: unknown kind '{kind}'")


def run_case(tensors, kind, config, dtype, mha_native=True):
    """Builds, loads, runs forward + backward. Returns (output, {param: grad}, {input: grad}, problems)."""
    model, fwd, pmap = build(kind, config, dtype, mha_native)
    names = sorted(k[len("param."):] for k in tensors if k.startswith("param."))
    problems = []
    if pmap is None:
        torch_names = set(model.state_dict().keys())
        for n in sorted(set(names) - torch_names):
            problems.append(f"parameter {n} is not in the torch model")
        for n in sorted(torch_names - set(names)):
            problems.append(f"torch parameter {n} is missing from the moekd file")
        pmap = default_params(model, [n for n in names if n in torch_names])
    else:
        for n in sorted(set(names) ^ set(pmap)):
            problems.append(f"parameter {n} does not map between moekd and torch")
    with torch.no_grad():
        for n, (p, _) in pmap.items():
            src = tensors["param." + n]
            if src.numel() != p.numel():
                problems.append(f"parameter {n}: moekd {tuple(src.shape)} vs torch {tuple(p.shape)}")
                continue
            p.copy_(src.reshape(p.shape))
    inputs = {}
    for k, t in tensors.items():
        if not k.startswith("input."):
            continue
        n = k[len("input."):]
        if n in INT_INPUTS:
            inputs[n] = t.long()
        elif n.endswith("mask"):
            inputs[n] = t != 0
        else:
            inputs[n] = t.to(dtype).clone().requires_grad_("grad_input." + n in tensors)
    model.zero_grad()
    out = fwd(inputs)
    (out * tensors["proj"].to(dtype)).sum().backward()
    grads = {}
    for n, (p, g) in pmap.items():
        gr = g()
        grads[n] = torch.zeros_like(p) if gr is None else gr
    in_grads = {n: t.grad for n, t in inputs.items() if t.is_floating_point() and t.requires_grad}
    return out, grads, in_grads, problems


def check_file(path):
    tensors, meta = read_safetensors(path)
    name, kind, config = meta["case"], meta["kind"], json.loads(meta["config"])
    out32, grads32, in32, problems = run_case(tensors, kind, config, torch.float32)
    out64, grads64, in64, _ = run_case(tensors, kind, config, torch.float64)
    ok = not problems
    for p in problems:
        print(f"{name:30s} MISSING  {p}")
    # (what, moekd tensor, torch fp32, torch fp64, tolerance)
    items = [("output", tensors["output"], out32, out64, OUT_TOL)]
    items += [("grad " + n, tensors["grad." + n], grads32[n], grads64[n], GRAD_TOL) for n in sorted(grads32)]
    items += [("grad input " + n, tensors["grad_input." + n], in32[n], in64[n], GRAD_TOL) for n in sorted(in32)]
    scale = max([g.abs().max().item() for _, _, _, g, _ in items[1:] if g.numel()] + [FLOOR])
    worst = {"output": 0.0, "grad": 0.0}
    for what, mine, t32, t64, tol in items:
        t32, t64 = t32.reshape(mine.shape), t64.reshape(mine.shape)
        if what != "output" and t64.numel() and t64.abs().max().item() <= ZERO * scale:
            # zero in exact arithmetic (e.g. key biases: softmax ignores a per-query shift), so
            # both float32 sides hold rounding noise only: measure it against the case's scale
            e = e64 = mine.double().abs().max().item() / scale
            note = "  (exactly zero: max|moekd| / max|grad of case|)"
        else:
            e, e64, note = rel_err(mine, t32), rel_err(mine, t64), ""
        good = e <= tol
        ok &= good
        key = "output" if what == "output" else "grad"
        worst[key] = max(worst[key], e)
        print(f"{name:30s} {'ok  ' if good else 'FAIL'}  {what:56s} rel {e:.2e} (tol {tol:.0e}; "
              f"vs torch fp64 {e64:.2e}){note}")
    if kind == "mha":  # the hand-written reference must agree with torch.nn.MultiheadAttention too
        out2, _, _, p2 = run_case(tensors, kind, config, torch.float32, mha_native=False)
        e = rel_err(out2, out32)
        good = e <= OUT_TOL and not p2
        ok &= good
        print(f"{name:30s} {'ok  ' if good else 'FAIL'}  {'torch_models.MHA vs torch.nn.MultiheadAttention':56s} "
              f"rel {e:.2e} (tol {OUT_TOL:.0e})")
    return ok, name, worst["output"], worst["grad"]


def main():
    args = sys.argv[1:]
    if len(args) != 1:
        raise SystemExit("usage: check_parity.py DIR")
    torch.manual_seed(0)
    files = sorted(f for f in os.listdir(args[0]) if f.endswith(".safetensors"))
    if not files:
        print(f"check_parity: no .safetensors files in {args[0]} (run parity_dump first)")
        return 1
    results = [check_file(os.path.join(args[0], f)) for f in files]
    print("\nsummary (max relative error against torch float32):")
    for ok, name, eo, eg in results:
        print(f"  {name:30s} output {eo:.2e}  gradients {eg:.2e}  {'ok' if ok else 'FAIL'}")
    failed = [r[1] for r in results if not r[0]]
    print(f"{len(results) - len(failed)} of {len(results)} cases pass" + (f"; FAILED: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

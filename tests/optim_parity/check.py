#!/usr/bin/python3
"""check.py -- our optimizers against PyTorch, step by step (run with Debian's /usr/bin/python3,
which has torch; it has no `safetensors` package, so read_safetensors below is ~25 lines).
  check.py <trajectories.safetensors written by optim_parity>
Replays every optimizer with torch.optim.SGD / Adam / AdamW (foreach=False: the reference
for-loop code) and LAMB written here from the paper (You et al. 2020, Algorithm 2 with bias
correction; trust ratio ||p|| / ||r + wd p||, 1 when either norm is 0), on the same initial
parameters, groups and per-step gradients, in float32.
Error per (optimizer, step, parameter):  max_i |ours_i - torch_i| / max_i |torch_i|
(the max-norm relative error of the whole tensor). Every one must be <= 1e-5; exit 1 otherwise.
"""
import json
import struct
import sys

import torch

TOL = 1e-5


def read_safetensors(path):
    with open(path, "rb") as f:
        raw = f.read()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    data = raw[8 + n:]
    meta = header.pop("__metadata__", {})
    out = {}
    for name, e in header.items():
        assert e["dtype"] == "F32", f"{name}: {e['dtype']}"
        b, end = e["data_offsets"]
        t = torch.frombuffer(bytearray(data[b:end]), dtype=torch.float32) if end > b else torch.zeros(0)
        out[name] = t.reshape(e["shape"]).clone()
    return out, meta


class LAMB(torch.optim.Optimizer):
    """LAMB, You et al. 2020, Algorithm 2 (with Adam's bias correction)."""

    def __init__(self, params, lr, betas, eps, weight_decay=0.0):
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self):
        for group in self.param_groups:
            b1, b2 = group["betas"]
            for p in group["params"]:
                st = self.state[p]
                if not st:
                    st["t"], st["m"], st["v"] = 0, torch.zeros_like(p), torch.zeros_like(p)
                st["t"] += 1
                t, g = st["t"], p.grad
                st["m"].mul_(b1).add_(g, alpha=1 - b1)
                st["v"].mul_(b2).addcmul_(g, g, value=1 - b2)
                m_hat = st["m"] / (1 - b1 ** t)
                v_hat = st["v"] / (1 - b2 ** t)
                r = m_hat / (v_hat.sqrt() + group["eps"]) + group["weight_decay"] * p
                pn, rn = p.norm().item(), r.norm().item()
                trust = pn / rn if pn > 0 and rn > 0 else 1.0
                p.add_(r, alpha=-group["lr"] * trust)


def make(name, params, cfg):
    groups = [dict(params=[params[i] for i in g["params"]], lr=g["lr"], weight_decay=g["weight_decay"])
              for g in cfg["groups"]]
    c = cfg[name]
    if name.startswith("sgd"):
        return torch.optim.SGD(groups, lr=0.1, momentum=c["momentum"], dampening=c["dampening"],
                               nesterov=name == "sgd_nesterov", foreach=False)
    if name == "adam":
        return torch.optim.Adam(groups, lr=0.1, betas=tuple(c["betas"]), eps=c["eps"], foreach=False)
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=0.1, betas=tuple(c["betas"]), eps=c["eps"], foreach=False)
    return LAMB(groups, lr=0.1, betas=tuple(c["betas"]), eps=c["eps"])


def main(path):
    t, meta = read_safetensors(path)
    cfg = json.loads(meta["config"])
    steps, nparam = cfg["steps"], len([k for k in t if k.startswith("init.")])
    names = sorted({k.split(".")[1] for k in t if k.startswith("traj.")})
    worst_all, misses = 0.0, 0
    for name in names:
        params = [t[f"init.{i}"].clone().requires_grad_() for i in range(nparam)]
        opt = make(name, params, cfg)
        worst = 0.0
        for s in range(1, steps + 1):
            for i, p in enumerate(params):
                p.grad = t[f"grad.{s}.{i}"].clone()
            opt.step()
            for i, p in enumerate(params):
                ours, ref = t[f"traj.{name}.{s}.{i}"], p.detach()
                err = ((ours - ref).abs().max() / ref.abs().max().clamp_min(1e-30)).item()
                worst = max(worst, err)
                if not err <= TOL:
                    misses += 1
                    print(f"MISS {name} step {s} param {i}: relative error {err:.3e} > {TOL:g}")
        worst_all = max(worst_all, worst)
        print(f"{name:13s} {steps} steps x {nparam} params: max relative error {worst:.3e}")
    print(f"torch {torch.__version__}: {len(names)} optimizers, worst {worst_all:.3e} (tolerance {TOL:g}), {misses} misses")
    return 1 if misses or not names else 0


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    sys.exit(main(sys.argv[1]))

#!/usr/bin/env python3
"""bf16_torch.py <dir> -- a BF16 tensor moekd wrote (interop_io write: cpp_bf16.safetensors) read by
the reference `safetensors` package into torch: it must come back as torch.bfloat16 with exactly
the bits moekd wrote (cpp_bf16_bits.txt). Runs on Debian's /usr/bin/python3 (python3-torch)."""
import sys

import torch
from safetensors.torch import load_file

d = sys.argv[1]
t = load_file(f"{d}/cpp_bf16.safetensors")["b"]
want = [int(x) for x in open(f"{d}/cpp_bf16_bits.txt").read().split()]
if t.dtype != torch.bfloat16 or list(t.shape) != [3, 4]:
    sys.exit(f"bf16_torch: got {t.dtype} {list(t.shape)}, want torch.bfloat16 [3, 4]")
got = [v & 0xFFFF for v in t.flatten().view(torch.int16).tolist()]
bad = [(i, g, w) for i, (g, w) in enumerate(zip(got, want)) if g != w]
if bad or len(got) != len(want):
    sys.exit(f"bf16_torch: bits differ at (index, got, want) {bad}")
print(f"bf16_torch: {len(got)} bfloat16 values read by safetensors.torch, bit for bit: {t.flatten().tolist()}")

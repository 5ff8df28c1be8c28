#!/usr/bin/env python3
"""interop.py -- the Python half of the safetensors interop proof, using the reference
`safetensors` package (safetensors.numpy) on the python3 found on PATH:
  interop.py check-cpp <dir>   read every file interop_io wrote and compare with cpp_expected.txt,
                               and verify each crc32.<tensor> metadata entry with zlib.crc32
  interop.py write-py <dir>    write py_out.safetensors with save_file (+ metadata) and the
                               expected values in py_expected.txt, for `interop_io check`
Side format: see tests/interop/interop_io.cpp. Values compare exactly (NaN == NaN, sign of zero).
"""
import math
import os
import sys
import zlib

import numpy as np
from safetensors import safe_open
from safetensors.numpy import load_file, save_file

TAGS = {np.dtype(np.float32): "F32", np.dtype(np.float64): "F64", np.dtype(np.float16): "F16",
        np.dtype(np.int64): "I64", np.dtype(np.int32): "I32", np.dtype(np.uint8): "U8",
        np.dtype(np.uint64): "U64", np.dtype(np.bool_): "BOOL"}


def fmt(v, floating):
    return float(v).hex() if floating else str(int(v))


def same(a, b):
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    return a == b and math.copysign(1, a) == math.copysign(1, b)


def parse_float(tok):
    return float(tok) if tok.lstrip("-") in ("inf", "nan") else float.fromhex(tok)


def check_cpp(d):
    expected = {}
    metas = {}
    with open(os.path.join(d, "cpp_expected.txt")) as f:
        for line in f:
            p = line.split()
            if p[0] == "meta":
                k = b"" if p[2] == "-" else bytes.fromhex(p[2])
                v = b"" if p[3] == "-" else bytes.fromhex(p[3])
                metas.setdefault(p[1], {})[k.decode()] = v.decode()
                continue
            _, fname, name, dtype, rank = p[:5]
            rank = int(rank)
            shape = tuple(int(x) for x in p[5:5 + rank])
            count = int(p[5 + rank])
            vals = p[6 + rank:6 + rank + count]
            expected.setdefault(fname, {})[name] = (dtype, shape, vals)
    bad = values = crcs = 0
    for fname, tensors in sorted(expected.items()):
        path = os.path.join(d, fname)
        loaded = load_file(path)
        with safe_open(path, framework="np") as so:
            meta = so.metadata() or {}
        if set(loaded) != set(tensors):
            print(f"MISMATCH {fname}: names {sorted(loaded)} vs expected {sorted(tensors)}")
            bad += 1
        for name, (dtype, shape, vals) in tensors.items():
            a = loaded.get(name)
            if a is None:
                continue
            if TAGS.get(a.dtype) != dtype or a.shape != shape:
                print(f"MISMATCH {fname}:{name}: {a.dtype} {a.shape} vs expected {dtype} {shape}")
                bad += 1
                continue
            floating = dtype.startswith("F")
            flat = a.reshape(-1)
            for i, tok in enumerate(vals):
                values += 1
                ok = same(float(flat[i]), parse_float(tok)) if floating else int(flat[i]) == int(tok)
                if not ok:
                    print(f"MISMATCH {fname}:{name}[{i}]: {flat[i]!r} vs expected {tok}")
                    bad += 1
            # our checkpoints carry a CRC-32 per tensor: verify it independently with zlib
            crc = meta.get("crc32." + name)
            if crc is not None:
                crcs += 1
                got = "%08x" % (zlib.crc32(np.ascontiguousarray(a).tobytes()) & 0xFFFFFFFF)
                if got != crc:
                    print(f"MISMATCH {fname}:{name}: crc32 {crc} in the file, zlib says {got}")
                    bad += 1
        for k, v in metas.get(fname, {}).items():
            if meta.get(k) != v:
                print(f"MISMATCH {fname}: metadata {k!r} = {meta.get(k)!r}, expected {v!r}")
                bad += 1
    print(f"check-cpp: {len(expected)} files, {sum(len(t) for t in expected.values())} tensors, {values} values, "
          f"{crcs} crc32 entries, {sum(len(m) for m in metas.values())} metadata entries, {bad} mismatches")
    return 1 if bad else 0


def write_py(d):
    rng = np.random.default_rng(2024)
    tensors = {
        "f32": rng.standard_normal((3, 4)).astype(np.float32),
        "f32_special": np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 1e-45, np.finfo(np.float32).max], np.float32),
        "f64": rng.standard_normal((2, 2, 3)),
        "f16": np.array([0.5, -2.0, 65504.0, 6e-8, 1.0009765625, -0.0], np.float16),
        "i64": np.array([np.iinfo(np.int64).min, -1, 0, 1, np.iinfo(np.int64).max], np.int64).reshape(5, 1),
        "i32": rng.integers(-2**31, 2**31, size=(4,), dtype=np.int32),
        "u8": np.arange(0, 256, 51, dtype=np.uint8),
        "bool": np.array([True, False, True]),
        "scalar": np.array(7.25, np.float32),
        "empty": np.zeros((0, 4), np.float32),
    }
    meta = {"format": "np", "author": "interop.py", "unicode": "\u00e9\u4e2d\U0001F600", "quote": "\"a\\b\"\n"}
    save_file(tensors, os.path.join(d, "py_out.safetensors"), metadata=meta)
    with open(os.path.join(d, "py_expected.txt"), "w") as f:
        for name, a in tensors.items():
            tag = TAGS[a.dtype]
            floating = tag.startswith("F")
            flat = a.reshape(-1)
            f.write(" ".join(["tensor", "py_out.safetensors", name, tag, str(a.ndim)] + [str(s) for s in a.shape] +
                             [str(flat.size)] + [fmt(v, floating) for v in flat]) + "\n")
        for k, v in meta.items():
            f.write(f"meta py_out.safetensors {k.encode().hex() or '-'} {v.encode().hex() or '-'}\n")
    print(f"write-py: py_out.safetensors with {len(tensors)} tensors and {len(meta)} metadata entries")
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] not in ("check-cpp", "write-py"):
        sys.exit(__doc__)
    sys.exit(check_cpp(sys.argv[2]) if sys.argv[1] == "check-cpp" else write_py(sys.argv[2]))

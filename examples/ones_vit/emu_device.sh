#!/bin/bash
# emu_device.sh BIN OUT [FLAGS...] — ones_vit --device cuda end to end on the emulated device
# (ones_vit_emu), then the same flags with --device cpu: both must finish (exit 0) and every
# epoch's train loss and test accuracy in log.jsonl must agree (losses to TOL relative, default
# 1e-4; a bf16 run's products round alike on both devices but sum in another order).
# Prints "PASS ones_vit emu device" at the end.
set -u
bin=$1 out=$2
shift 2
rm -rf "$out" && mkdir -p "$out"
t0=$(date +%s.%N)
"$bin" --device cuda --out "$out/cuda" "$@" || { echo "FAIL: --device cuda exited $?"; exit 1; }
t1=$(date +%s.%N)
"$bin" --device cpu --out "$out/cpu" "$@" || { echo "FAIL: --device cpu exited $?"; exit 1; }
t2=$(date +%s.%N)
echo "times: cuda (emulated) $(echo "$t1 - $t0" | bc) s, cpu $(echo "$t2 - $t1" | bc) s"
python3 - "$out/cuda/log.jsonl" "$out/cpu/log.jsonl" "${TOL:-1e-4}" <<'PY' || exit 1
import json, sys
rows = [[json.loads(l) for l in open(p)] for p in sys.argv[1:3]]
tol = float(sys.argv[3])
ep = [[r for r in rs if "epoch" in r] for rs in rows]
assert len(ep[0]) == len(ep[1]) and ep[0], "different epoch lines: %d vs %d" % (len(ep[0]), len(ep[1]))
worst = 0.0
for a, b in zip(*ep):
    assert a["run"] == b["run"] and a["epoch"] == b["epoch"], (a, b)
    la, lb = a["train_loss"], b["train_loss"]
    rel = abs(la - lb) / max(abs(lb), 1e-12)
    worst = max(worst, rel)
    print("%-8s epoch %d  train loss cuda %.6g cpu %.6g (rel %.1e)  test acc cuda %s cpu %s"
          % (a["run"], a["epoch"], la, lb, rel, a["test_acc"], b["test_acc"]))
    assert rel <= tol, "train loss differs by %.2e relative (tolerance %g)" % (rel, tol)
    assert abs(a["test_acc"] - b["test_acc"]) <= 0.05, "test accuracy differs: %s vs %s" % (a["test_acc"], b["test_acc"])
print("largest relative train-loss difference: %.2e" % worst)
PY
echo "PASS ones_vit emu device"

#!/bin/bash
# emu_device.sh BIN OUT [FLAGS...] — tcd_bert --device cuda end to end on the emulated device
# (tcd_bert_emu), then the same flags with --device cpu: both must finish (exit 0), and every
# pre-training epoch's losses in log.jsonl (MLM, L_T, L_I, L_A, held-out LL) must agree to 1e-4
# relative (the balance loss to 1e-3 absolute, see below), and the fine-tuning scores closely.
# Prints "PASS tcd_bert emu device" at the end.
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
python3 - "$out/cuda/log.jsonl" "$out/cpu/log.jsonl" <<'PY' || exit 1
import json, sys
rows = [[json.loads(l) for l in open(p)] for p in sys.argv[1:3]]
pre = [[r for r in rs if r.get("event") == "pretrain_epoch"] for rs in rows]
ft = [[r for r in rs if r.get("event") == "finetune"] for rs in rows]
assert pre[0] and len(pre[0]) == len(pre[1]), "pre-training epochs: %d vs %d" % (len(pre[0]), len(pre[1]))
assert len(ft[0]) == len(ft[1]), "fine-tuning lines: %d vs %d" % (len(ft[0]), len(ft[1]))
worst = 0.0
for a, b in zip(*pre):
    assert a["run"] == b["run"] and a["epoch"] == b["epoch"], (a, b)
    for k in ("mlm", "balance", "l_t", "l_i", "l_a", "heldout_ll"):
        x, y = a[k], b[k]
        if x is None or y is None:
            assert x == y, (k, x, y)
            continue
        rel = abs(x - y) / max(abs(y), 1e-6)
        print("%-8s epoch %d  %-10s cuda %.7g cpu %.7g (rel %.1e)" % (a["run"], a["epoch"], k, x, y, rel))
        if k == "balance":
            # lambda_B (1000) times a KL of nearly uniform distributions, a sum of cancelling terms:
            # the two reduction orders round it differently (measured 1.2e-4 on 0.086), so absolute
            assert abs(x - y) <= 1e-3 or rel <= 1e-3, "balance of %s differs by %.2e" % (a["run"], abs(x - y))
            continue
        worst = max(worst, rel)
        assert rel <= 1e-4, "%s of %s differs by %.2e relative" % (k, a["run"], rel)
for a, b in zip(*ft):
    print("%-8s fine-tuned score cuda %s cpu %s" % (a["run"], a["score"], b["score"]))
    assert a["run"] == b["run"] and abs(a["score"] - b["score"]) <= 0.1, (a, b)
print("largest relative pre-training loss difference (balance aside): %.2e" % worst)
PY
echo "PASS tcd_bert emu device"

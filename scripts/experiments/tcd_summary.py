#!/usr/bin/env python3
"""tcd_summary.py GRID OUT — held-out MLM log-likelihood (last pre-training epoch) of the teacher
and the MoE BERT per grid line, mean ± sd over the seeds found in OUT/NAME_sS/log.jsonl, and the
gap MoE − teacher (positive: the MoE pre-trains better), seed by seed."""
import json, os, statistics, sys

grid, out = sys.argv[1], sys.argv[2]
names = [l.split()[0] for l in open(grid) if l.strip() and not l.startswith("#")]
print("| setting | seeds | teacher LL | MoE LL | gap MoE − teacher (per seed) | mean gap |")
print("|---|---|---|---|---|---|")
for n in names:
    rows = []
    for d in sorted(os.listdir(out)):
        if not d.startswith(n + "_s") or not os.path.isfile(os.path.join(out, d, "log.jsonl")):
            continue
        last = {}
        for line in open(os.path.join(out, d, "log.jsonl")):
            e = json.loads(line)
            if e.get("event") == "pretrain_epoch":
                last[e["run"]] = e["heldout_ll"]
        if "teacher" in last and "moe" in last:
            rows.append((d[len(n) + 2:], last["teacher"], last["moe"]))
    if not rows:
        continue
    ms = lambda v: f"{statistics.mean(v):.4f}" + (f" ± {statistics.stdev(v):.4f}" if len(v) > 1 else "")
    gaps = [m - t for _, t, m in rows]
    print(f"| {n} | {','.join(s for s, _, _ in rows)} | {ms([t for _, t, _ in rows])} | {ms([m for _, _, m in rows])} | "
          f"{', '.join(f'{g:+.4f}' for g in gaps)} | {statistics.mean(gaps):+.4f} |")

# The downstream score of each run's last checkpoint (full fine-tuning or adapters, as chosen; the
# mean over the fine-tuning seeds), where the grid fine-tuned: teacher, MoE, MoE w/ TCD (and the
# ablation's T and T+I+A runs when every seed has them), each TCD run's difference to the MoE
# seed by seed, and the TCD runs' held-out LL.
extra = ("tcd-t", "tcd-tia")
label = {"teacher": "teacher", "moe": "MoE", "tcd": "MoE w/ TCD", "tcd-t": "TCD (T)", "tcd-tia": "TCD (T+I+A)"}
for n in names:
    rows = []
    for d in sorted(os.listdir(out)):
        if not d.startswith(n + "_s") or not os.path.isfile(os.path.join(out, d, "log.jsonl")):
            continue
        ft, ll = {}, {}
        for line in open(os.path.join(out, d, "log.jsonl")):
            e = json.loads(line)
            if e.get("event") == "finetune" and (e["run"] not in ft or e["epoch"] >= ft[e["run"]][0]):
                ft[e["run"]] = (e["epoch"], 100 * e["score"])
            if e.get("event") == "pretrain_epoch":
                ll[e["run"]] = e["heldout_ll"]
        if all(r in ft for r in ("teacher", "moe", "tcd")):
            rows.append((d[len(n) + 2:], ft, ll))
    if not rows:
        continue
    runs = ["teacher", "moe", "tcd"] + [r for r in extra if all(r in ft for _, ft, _ in rows)]
    tcds = [r for r in runs if r.startswith("tcd")]
    ms2 = lambda v: f"{statistics.mean(v):.2f}" + (f" ± {statistics.stdev(v):.2f}" if len(v) > 1 else "")
    print()
    print(f"{n}, seeds {','.join(s for s, _, _ in rows)}:")
    print("| | " + " | ".join(label[r] for r in runs) + " |")
    print("|---" * (len(runs) + 1) + "|")
    print("| score | " + " | ".join(ms2([ft[r][1] for _, ft, _ in rows]) for r in runs) + " |")
    print("| − MoE, per seed | | | " + " | ".join(
        ", ".join(f"{ft[r][1] - ft['moe'][1]:+.2f}" for _, ft, _ in rows) for r in tcds) + " |")
    print("| held-out LL | " + " | ".join(
        f"{statistics.mean([ll[r] for _, _, ll in rows if r in ll]):.4f}" for r in runs) + " |")

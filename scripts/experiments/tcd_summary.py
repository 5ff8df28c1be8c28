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

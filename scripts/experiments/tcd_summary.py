#!/usr/bin/env python3
"""tcd_summary.py GRID OUT — per grid line, over the seeds found in OUT/NAME_sS/log.jsonl:
(1) the held-out MLM log-likelihood (last pre-training epoch) of the teacher and the MoE BERT,
mean ± sd, and the gap MoE − teacher (positive: the MoE pre-trains better), seed by seed;
(2) where the grid fine-tuned, the downstream score of each run's last checkpoint (full
fine-tuning or adapters, as chosen; the mean over the fine-tuning seeds): teacher, MoE, MoE w/
TCD (and the ablation's T and T+I+A runs when every seed has them), each TCD run's difference to
the MoE seed by seed, and the runs' held-out LL. Grid lines that fine-tune read-back checkpoints
(--finetune-from) get the second table only (their LL is the pre-training run's)."""
import json, os, statistics, sys

grid, out = sys.argv[1], sys.argv[2]
names = [l.split()[0] for l in open(grid) if l.strip() and not l.startswith("#")]
label = {"teacher": "teacher", "moe": "MoE", "tcd": "MoE w/ TCD", "tcd-t": "TCD (T)", "tcd-tia": "TCD (T+I+A)"}


reads_back = {}  # grid line -> its runs read checkpoints back (--finetune-from): no LL table of their own


def seeds_of(n):
    """[(seed, last fine-tuning score per run, last held-out LL per run)] of grid line n."""
    found = []
    for d in sorted(os.listdir(out)):
        log = os.path.join(out, d, "log.jsonl")
        if not d.startswith(n + "_s") or not os.path.isfile(log):
            continue
        ft, ll, read_back = {}, {}, False
        for line in open(log):
            e = json.loads(line)
            if e.get("event") == "finetune" and (e["run"] not in ft or e["epoch"] >= ft[e["run"]][0]):
                ft[e["run"]] = (e["epoch"], 100 * e["score"])
            if e.get("event") in ("pretrain_epoch", "pretrained"):  # pre-trained here, or read back (--finetune-from)
                ll[e["run"]] = e["heldout_ll"]
                read_back = read_back or e["event"] == "pretrained"
        found.append((d[len(n) + 2:], {r: v[1] for r, v in ft.items()}, ll))
        reads_back[n] = read_back
    return found


def ms(v, digits):
    return f"{statistics.mean(v):.{digits}f}" + (f" ± {statistics.stdev(v):.{digits}f}" if len(v) > 1 else "")


runs_of = {n: seeds_of(n) for n in names}

header = True
for n in names:
    rows = [(s, ll["teacher"], ll["moe"]) for s, _, ll in runs_of[n] if "teacher" in ll and "moe" in ll]
    if not rows or reads_back.get(n):
        continue
    if header:
        print("| setting | seeds | teacher LL | MoE LL | gap MoE − teacher (per seed) | mean gap |")
        print("|---|---|---|---|---|---|")
        header = False
    gaps = [m - t for _, t, m in rows]
    print(f"| {n} | {','.join(s for s, _, _ in rows)} | {ms([t for _, t, _ in rows], 4)} | {ms([m for _, _, m in rows], 4)} | "
          f"{', '.join(f'{g:+.4f}' for g in gaps)} | {statistics.mean(gaps):+.4f} |")

for n in names:
    rows = [r for r in runs_of[n] if all(k in r[1] for k in ("teacher", "moe", "tcd"))]
    if not rows:
        continue
    runs = ["teacher", "moe", "tcd"] + [r for r in ("tcd-t", "tcd-tia") if all(r in ft for _, ft, _ in rows)]
    tcds = [r for r in runs if r.startswith("tcd")]
    print()
    print(f"{n}, seeds {','.join(s for s, _, _ in rows)}:")
    print("| | " + " | ".join(label[r] for r in runs) + " |")
    print("|---" * (len(runs) + 1) + "|")
    print("| score | " + " | ".join(ms([ft[r] for _, ft, _ in rows], 2) for r in runs) + " |")
    print("| − MoE, per seed | | | " + " | ".join(
        ", ".join(f"{ft[r] - ft['moe']:+.2f}" for _, ft, _ in rows) for r in tcds) + " |")
    print("| held-out LL | " + " | ".join(
        f"{statistics.mean([ll[r] for _, _, ll in rows if r in ll]):.4f}" for r in runs) + " |")

#!/usr/bin/env python3
"""tsjt_summary.py GRID_FILE OUT — for each setting of a grid.sh tsjt_wmt grid: mean +- sd over the
seeds of the average BLEU (MoE, dense) per mode from OUT/NAME_sS/results.json, TSJT's switch
updates, and, over the updates that used the KL (from each log.jsonl), the mean of
alpha_dense * kl_scale * KL against the mean balance loss (aux). alpha_dense and kl_scale are
read from the grid line's flags (tsjt_wmt's defaults when absent: pass them in the grid)."""
import json, os, shlex, statistics, sys

DEFAULTS = {"--alpha-dense": 10.0, "--kl-scale": float(os.environ.get("KL_SCALE_DEFAULT", "0.02"))}


def flag(args, name):
    return float(args[args.index(name) + 1]) if name in args else DEFAULTS[name]


def ms(xs):
    if not xs:
        return "-"
    if len(xs) == 1:
        return "%.2f (1 seed)" % xs[0]
    return "%.2f +- %.2f" % (statistics.mean(xs), statistics.stdev(xs))


def main():
    grid, out = sys.argv[1], sys.argv[2]
    print("| setting | mode | seeds | MoE avg BLEU | dense avg BLEU | TSJT switch | alpha_d*c*KL vs aux (KL updates) |")
    print("|---|---|---|---|---|---|---|")
    for line in open(grid):
        if not line.strip() or line.startswith("#"):
            continue
        name, *args = shlex.split(line)
        ad, c = flag(args, "--alpha-dense"), flag(args, "--kl-scale")
        rows = {}
        seeds = sorted(d for d in os.listdir(out) if d.startswith(name + "_s") and d[len(name) + 2:].isdigit())
        for d in seeds:
            res = os.path.join(out, d, "results.json")
            if not os.path.exists(res):
                continue
            for r in json.load(open(res)):
                e = rows.setdefault(r["mode"], {"moe": [], "dense": [], "switch": [], "kl": [], "aux": []})
                e[r["model"]].append(r["avg"])
                if r["model"] != "moe":
                    continue
                if r["switch_step"] >= 0:
                    e["switch"].append(r["switch_step"])
                kl = [json.loads(x) for x in open(os.path.join(out, d, r["mode"], "log.jsonl"))]
                kl = [x for x in kl if x.get("used_kl")]
                if kl:
                    e["kl"].append(statistics.mean(x["kl"] for x in kl))
                    e["aux"].append(statistics.mean(x["aux"] for x in kl))
        for mode, e in rows.items():
            mag = "-"
            if e["kl"]:
                mag = "%.3f vs %.3f" % (ad * c * statistics.mean(e["kl"]), statistics.mean(e["aux"]))
            sw = ("%d-%d" % (min(e["switch"]), max(e["switch"]))) if e["switch"] else "-"
            print("| %s | %s | %d | %s | %s | %s | %s |" % (name, mode, len(e["moe"]), ms(e["moe"]), ms(e["dense"]), sw, mag))


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""ones_summary.py GRID_FILE OUT — for each setting of a grid.sh ones_vit grid: mean +- sd over
the seeds of each run's final test accuracy, its accuracy right after initialisation and its
best epoch, from OUT/NAME_sS/results.json."""
import json, os, shlex, statistics, sys


def ms(xs):
    if not xs:
        return "-"
    if len(xs) == 1:
        return "%.4f (1 seed)" % xs[0]
    return "%.4f +- %.4f" % (statistics.mean(xs), statistics.stdev(xs))


def main():
    grid, out = sys.argv[1], sys.argv[2]
    print("| setting | run | seeds | test acc (final) | acc at init | best acc |")
    print("|---|---|---|---|---|---|")
    for line in open(grid):
        if not line.strip() or line.startswith("#"):
            continue
        name = shlex.split(line)[0]
        rows = {}
        for d in sorted(os.listdir(out)):
            if not (d.startswith(name + "_s") and d[len(name) + 2:].isdigit()):
                continue
            res = os.path.join(out, d, "results.json")
            if not os.path.exists(res):
                continue
            for r in json.load(open(res))["runs"]:
                e = rows.setdefault(r["model"], {"acc": [], "init": [], "best": []})
                e["acc"].append(r["test_acc"])
                e["init"].append(r["init_acc"])
                e["best"].append(r["best_acc"])
        for model, e in rows.items():
            print("| %s | %s | %d | %s | %s | %s |" % (name, model, len(e["acc"]), ms(e["acc"]), ms(e["init"]), ms(e["best"])))


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""metrics_parity.py — checks moekd's GLUE metrics against scikit-learn and SciPy.

Reads the JSON lines written by metrics_parity_dump (predictions, gold values and moekd's
metrics), recomputes accuracy_score, f1_score (pos_label 1 and 0, zero_division=0),
matthews_corrcoef, pearsonr and spearmanr on the same values, and compares with tolerance 1e-12
(absolute or relative); a NaN must be NaN on both sides. Where SciPy's own rounding error is
larger than that (Pearson on data with a large offset and a small spread, e.g. 1e8 + 1e-3 u), the
exact value from rational arithmetic on the same doubles decides: moekd passes if it is within
1e-14 of it (the case is reported). Exit 0 if everything agrees, else 1.
Usage: python3 metrics_parity.py <file.jsonl>
"""
import json
import math
import sys
import warnings

import numpy as np
from scipy import stats
from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef

warnings.simplefilter("ignore")  # constant-input / zero-division warnings are the cases tested


def f1(gold, pred, pos):
    """sklearn's F1 of class pos (one-vs-rest); for 0/1 labels also its average="binary" form."""
    v = f1_score(gold, pred, labels=[pos], average=None, zero_division=0)[0]
    if set(gold) | set(pred) <= {0, 1} and pos == 1:
        b = f1_score(gold, pred, pos_label=1, average="binary", zero_division=0)
        if not close(v, b):
            raise AssertionError(f"sklearn's two F1 forms disagree: {v} vs {b}")
    return v


def exact_pearson(x, y):
    """Pearson's r of the given doubles in exact rational arithmetic (then one rounding)."""
    from decimal import Decimal, getcontext
    from fractions import Fraction
    getcontext().prec = 40
    x, y = [Fraction(float(v)) for v in x], [Fraction(float(v)) for v in y]
    mx, my = sum(x) / len(x), sum(y) / len(y)
    sxy = sum((a - mx) * (b - my) for a, b in zip(x, y))
    sxx, syy = sum((a - mx) ** 2 for a in x), sum((b - my) ** 2 for b in y)
    dec = lambda f: Decimal(f.numerator) / Decimal(f.denominator)
    return float(dec(sxy) / (dec(sxx) * dec(syy)).sqrt())


def stat(v):
    return float(getattr(v, "statistic", v[0] if isinstance(v, tuple) else v))


def close(a, b, tol=1e-12):
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    return abs(a - b) <= tol * max(1.0, abs(b))


def main():
    if len(sys.argv) != 2:
        print(__doc__)
        return 2
    bad, n, checked = 0, 0, 0
    with open(sys.argv[1]) as f:
        for line in f:
            c = json.loads(line)
            n += 1
            if c["kind"] == "class":
                gold = [int(v) for v in c["gold"]]
                pred = [int(v) for v in c["pred"]]
                ref = {"acc": accuracy_score(gold, pred), "f1": f1(gold, pred, 1), "f1_0": f1(gold, pred, 0),
                       "mcc": matthews_corrcoef(gold, pred)}
            else:
                x, y = np.array(c["pred"], dtype=float), np.array(c["gold"], dtype=float)
                ref = {"pearson": stat(stats.pearsonr(x, y)), "spearman": stat(stats.spearmanr(x, y))}
            for k, want in ref.items():
                checked += 1
                got = float(c[k])
                if not close(got, float(want)) and k == "pearson":
                    exact = exact_pearson(c["pred"], c["gold"])
                    if close(got, exact, 1e-14) and abs(got - exact) < abs(float(want) - exact):
                        print(f"note {c['name']} {k}: scipy {float(want)!r} is off the exact {exact!r}; "
                              f"moekd {got!r} matches it")
                        continue
                if not close(got, float(want)):
                    bad += 1
                    print(f"MISMATCH {c['name']} {k}: moekd {got!r} reference {float(want)!r}")
    print(f"metrics_parity: {n} cases, {checked} values, {bad} mismatches")
    return 1 if bad or n == 0 else 0


if __name__ == "__main__":
    sys.exit(main())

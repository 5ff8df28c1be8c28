#!/usr/bin/env python3
"""plot_curves.py OUT.svg TITLE XKEY YKEY LABEL=LOG.jsonl[#KEY][@FILTER] ... — one line per series,
drawn from the JSON objects of each log.jsonl that have both keys (#KEY: this series' y key
instead of YKEY, which then only names the axis; FILTER: key=value or key!=value conditions
joined by &, e.g. run=teacher&epoch!=0, keeps only the matching objects). Plain SVG, no plotting library: the examples' own
figures (io/svg_plot.hpp) look the same. Series whose label starts with the same word share a
colour; bf16 series are dashed."""
import json, sys

COLOURS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#17becf"]


def keep(o, filt):
    for cond in filter(None, filt.split("&")):
        neg = "!=" in cond
        k, _, v = cond.partition("!=" if neg else "=")
        if (str(o.get(k)) == v) == neg:
            return False
    return True


def load(spec, xkey, ykey):
    path, _, filt = spec.partition("@")
    path, _, own = path.partition("#")
    ykey = own or ykey
    pts = []
    for line in open(path):
        o = json.loads(line)
        if not keep(o, filt):
            continue
        if xkey in o and ykey in o and isinstance(o[ykey], (int, float)):
            pts.append((float(o[xkey]), float(o[ykey])))
    return pts


def main():
    out, title, xkey, ykey = sys.argv[1:5]
    series = []
    for arg in sys.argv[5:]:
        label, _, spec = arg.partition("=")
        pts = load(spec, xkey, ykey)
        if not pts:
            sys.exit("plot_curves: no objects with %s and %s in %s" % (xkey, ykey, spec))
        series.append((label, pts))
    W, H, L, R, T, B = 720, 420, 70, 190, 40, 50
    xs = [x for _, p in series for x, _ in p]
    ys = [y for _, p in series for _, y in p]
    x0, x1, y0, y1 = min(xs), max(xs), min(ys), max(ys)
    if x1 == x0: x1 = x0 + 1
    if y1 == y0: y1 = y0 + 1
    sx = lambda x: L + (x - x0) / (x1 - x0) * (W - L - R)
    sy = lambda y: H - B - (y - y0) / (y1 - y0) * (H - T - B)
    e = ['<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" font-family="sans-serif" font-size="12">' % (W, H),
         '<rect width="100%" height="100%" fill="white"/>',
         '<text x="%d" y="22" font-size="14">%s</text>' % (L, title),
         '<rect x="%d" y="%d" width="%d" height="%d" fill="none" stroke="#888"/>' % (L, T, W - L - R, H - T - B)]
    for i in range(6):
        xv, yv = x0 + (x1 - x0) * i / 5, y0 + (y1 - y0) * i / 5
        e.append('<text x="%.1f" y="%d" text-anchor="middle">%g</text>' % (sx(xv), H - B + 16, round(xv, 3)))
        e.append('<text x="%d" y="%.1f" text-anchor="end">%.3g</text>' % (L - 6, sy(yv) + 4, yv))
        e.append('<line x1="%d" x2="%d" y1="%.1f" y2="%.1f" stroke="#eee"/>' % (L, W - R, sy(yv), sy(yv)))
    e.append('<text x="%d" y="%d" text-anchor="middle">%s</text>' % ((L + W - R) // 2, H - 12, xkey))
    e.append('<text x="16" y="%d" transform="rotate(-90 16 %d)" text-anchor="middle">%s</text>' % ((T + H - B) // 2, (T + H - B) // 2, ykey))
    groups = []
    for k, (label, pts) in enumerate(series):
        g = label.split()[0]
        if g not in groups: groups.append(g)
        c = COLOURS[groups.index(g) % len(COLOURS)]
        dash = ' stroke-dasharray="5,3"' if "bf16" in label else ""
        e.append('<polyline fill="none" stroke="%s" stroke-width="1.5"%s points="%s"/>' %
                 (c, dash, " ".join("%.1f,%.1f" % (sx(x), sy(y)) for x, y in pts)))
        ly = T + 10 + 18 * k
        e.append('<line x1="%d" x2="%d" y1="%d" y2="%d" stroke="%s" stroke-width="1.5"%s/>' % (W - R + 10, W - R + 34, ly, ly, c, dash))
        e.append('<text x="%d" y="%d">%s</text>' % (W - R + 40, ly + 4, label))
    e.append("</svg>")
    open(out, "w").write("\n".join(e) + "\n")


if __name__ == "__main__":
    main()

// svg_plot.hpp — a self-contained SVG line plot (training curves, accuracy per epoch) so that the
// examples can draw their figures without a plotting tool. No dependencies beyond the standard
// library; the output is plain SVG 1.1 that browsers and image viewers open.
//
//   io::LinePlot p;
//   p.title = "MoE cross-entropy";  p.x_label = "update";  p.y_label = "CE";
//   p.series.push_back({"TSJT", xs, ys});          // x, y: same length; NaN/inf points are gaps
//   p.markers.push_back({140, "stage 2"});         // a dashed vertical line at x = 140
//   io::write_svg("ce.svg", p);
//
// Axis ranges: the data range of all finite points (a constant series gets +-0.5 around its
// value, no data at all gives [0, 1]), or fixed by x_min/x_max/y_min/y_max. Points outside a fixed
// range are drawn on its edge (clamped), so a plot never draws outside its frame. Text is
// XML-escaped.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "../core/error.hpp"
#include "atomic_file.hpp"

namespace moekd::io {

/// One line of the plot. color: any SVG colour; empty = the palette's next colour.
struct PlotSeries {
    std::string name;
    std::vector<double> x, y;  // same length
    std::string color;
    bool dashed = false;
};

/// A vertical line across the plot at x (e.g. a stage switch), labelled at the top.
struct PlotMarker {
    double x = 0;
    std::string label;
    std::string color = "#555555";
};

struct LinePlot {
    std::string title, x_label, y_label;
    std::vector<PlotSeries> series;
    std::vector<PlotMarker> markers;
    std::optional<double> x_min, x_max, y_min, y_max;  // fixed axis ends (default: the data's)
    int width = 640, height = 420;
    int x_ticks = 5, y_ticks = 5;          // grid intervals (about that many when nice)
    bool nice = true;                      // ends not fixed are widened to a round tick step
    std::string x_format = "%g", y_format = "%.3g";  // printf formats of the tick labels
};

/// [lo, hi] of one axis; step > 0: ticks at the multiples of step (nice), else `ticks` even parts.
struct AxisRange {
    double lo = 0, hi = 1, step = 0;
};

/// The round step (1, 2, 2.5 or 5 times a power of ten) nearest to range / n (on a log scale).
inline double nice_step(double range, int n) {
    const double raw = range / std::max(n, 1);
    const double p = std::pow(10.0, std::floor(std::log10(raw)));
    const double f = raw / p;  // in [1, 10)
    return (f < 1.4142 ? 1 : f < 2.2361 ? 2 : f < 3.5355 ? 2.5 : f < 7.0711 ? 5 : 10) * p;
}

inline std::string xml_escape(const std::string& s) {
    std::string o;
    o.reserve(s.size());
    for (char c : s) {
        switch (c) {
            case '<': o += "&lt;"; break;
            case '>': o += "&gt;"; break;
            case '&': o += "&amp;"; break;
            case '"': o += "&quot;"; break;
            case '\'': o += "&apos;"; break;
            default: o += c;
        }
    }
    return o;
}

namespace svg_detail {

inline void check_plot(const LinePlot& p) {
    MOEKD_CHECK(p.width >= 200 && p.height >= 150, "svg_plot '", p.title, "': size ", p.width, "x", p.height,
                " is too small (at least 200x150)");
    MOEKD_CHECK(p.x_ticks >= 1 && p.y_ticks >= 1, "svg_plot '", p.title, "': x_ticks ", p.x_ticks, " and y_ticks ",
                p.y_ticks, " must be >= 1");
    for (const PlotSeries& s : p.series)
        MOEKD_CHECK(s.x.size() == s.y.size(), "svg_plot '", p.title, "': series '", s.name, "' has ", s.x.size(),
                    " x values but ", s.y.size(), " y values");
    auto finite_or_unset = [&](const std::optional<double>& v, const char* what) {
        MOEKD_CHECK(!v || std::isfinite(*v), "svg_plot '", p.title, "': ", what, " = ", *v, " is not finite");
    };
    finite_or_unset(p.x_min, "x_min"), finite_or_unset(p.x_max, "x_max");
    finite_or_unset(p.y_min, "y_min"), finite_or_unset(p.y_max, "y_max");
}

/// Data range of the finite points (x axis: x values; else y values), widened when degenerate,
/// then the fixed ends applied.
inline AxisRange axis_range(const LinePlot& p, bool x_axis) {
    double lo = std::numeric_limits<double>::infinity(), hi = -lo;
    for (const PlotSeries& s : p.series)
        for (size_t i = 0; i < s.x.size(); ++i) {
            if (!std::isfinite(s.x[i]) || !std::isfinite(s.y[i])) continue;
            const double v = x_axis ? s.x[i] : s.y[i];
            lo = std::min(lo, v), hi = std::max(hi, v);
        }
    if (x_axis)
        for (const PlotMarker& m : p.markers)
            if (std::isfinite(m.x)) lo = std::min(lo, m.x), hi = std::max(hi, m.x);
    if (lo > hi) lo = 0, hi = 1;                 // no data
    else if (lo == hi) lo -= 0.5, hi += 0.5;     // one value
    const auto& fmin = x_axis ? p.x_min : p.y_min;
    const auto& fmax = x_axis ? p.x_max : p.y_max;
    if (fmin) lo = *fmin;
    if (fmax) hi = *fmax;
    if (fmin && !fmax && hi <= lo) hi = lo + 1;
    if (fmax && !fmin && lo >= hi) lo = hi - 1;
    MOEKD_CHECK(hi > lo, "svg_plot '", p.title, "': ", x_axis ? "x" : "y", " range [", lo, ", ", hi,
                "] is empty (min must be < max)");
    if (!p.nice) return {lo, hi, 0};
    const double step = nice_step(hi - lo, x_axis ? p.x_ticks : p.y_ticks);
    if (!fmin) lo = std::floor(lo / step + 1e-9) * step;
    if (!fmax) hi = std::ceil(hi / step - 1e-9) * step;
    return {lo, hi, step};
}

inline std::string num(double v) {
    char b[32];
    std::snprintf(b, sizeof b, "%.2f", v);
    return b;
}

inline std::string label(const std::string& fmt, double v) {
    char b[64];
    std::snprintf(b, sizeof b, fmt.c_str(), v);
    return b;
}

}  // namespace svg_detail

inline AxisRange plot_x_range(const LinePlot& p) { return svg_detail::axis_range(p, true); }
inline AxisRange plot_y_range(const LinePlot& p) { return svg_detail::axis_range(p, false); }

/// The plot as an SVG document.
inline std::string svg_line_plot(const LinePlot& p) {
    svg_detail::check_plot(p);
    const AxisRange xr = plot_x_range(p), yr = plot_y_range(p);
    const double W = p.width, H = p.height, L = 70, R = 170, T = 34, B = 50;
    auto px = [&](double x) { return L + (W - L - R) * (std::clamp(x, xr.lo, xr.hi) - xr.lo) / (xr.hi - xr.lo); };
    auto py = [&](double y) { return H - B - (H - T - B) * (std::clamp(y, yr.lo, yr.hi) - yr.lo) / (yr.hi - yr.lo); };
    static const char* palette[] = {"#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd",
                                    "#8c564b", "#e377c2", "#17becf", "#000000"};
    using svg_detail::num;
    std::ostringstream os;
    os << "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
       << "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" << p.width << "\" height=\"" << p.height
       << "\" viewBox=\"0 0 " << p.width << " " << p.height << "\" font-family=\"sans-serif\" font-size=\"12\">\n"
       << "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
       << "<text x=\"10\" y=\"20\" font-size=\"13\">" << xml_escape(p.title) << "</text>\n";
    // grid and tick labels
    auto ticks = [](const AxisRange& r, int n) {
        std::vector<double> t;
        if (r.step > 0) {
            for (double k = std::ceil(r.lo / r.step - 1e-9); k * r.step <= r.hi + 1e-9 * r.step; k += 1)
                t.push_back(k * r.step == 0 ? 0.0 : k * r.step);  // no "-0"
        } else {
            for (int i = 0; i <= n; ++i) t.push_back(r.lo + (r.hi - r.lo) * i / n);
        }
        return t;
    };
    for (const double v : ticks(yr, p.y_ticks)) {
        os << "<line x1=\"" << num(L) << "\" x2=\"" << num(W - R) << "\" y1=\"" << num(py(v)) << "\" y2=\""
           << num(py(v)) << "\" stroke=\"#dddddd\"/><text x=\"" << num(L - 6) << "\" y=\"" << num(py(v) + 4)
           << "\" text-anchor=\"end\">" << xml_escape(svg_detail::label(p.y_format, v)) << "</text>\n";
    }
    for (const double v : ticks(xr, p.x_ticks)) {
        os << "<line x1=\"" << num(px(v)) << "\" x2=\"" << num(px(v)) << "\" y1=\"" << num(T) << "\" y2=\""
           << num(H - B) << "\" stroke=\"#eeeeee\"/><text x=\"" << num(px(v)) << "\" y=\"" << num(H - B + 16)
           << "\" text-anchor=\"middle\">" << xml_escape(svg_detail::label(p.x_format, v)) << "</text>\n";
    }
    os << "<rect x=\"" << num(L) << "\" y=\"" << num(T) << "\" width=\"" << num(W - L - R) << "\" height=\""
       << num(H - T - B) << "\" fill=\"none\" stroke=\"#444444\"/>\n"
       << "<text x=\"" << num((L + W - R) / 2) << "\" y=\"" << num(H - 12) << "\" text-anchor=\"middle\">"
       << xml_escape(p.x_label) << "</text>\n"
       << "<text transform=\"translate(16," << num((T + H - B) / 2) << ") rotate(-90)\" text-anchor=\"middle\">"
       << xml_escape(p.y_label) << "</text>\n";
    // markers
    for (const PlotMarker& m : p.markers) {
        if (!std::isfinite(m.x)) continue;
        const std::string c = xml_escape(m.color);
        os << "<line class=\"marker\" x1=\"" << num(px(m.x)) << "\" x2=\"" << num(px(m.x)) << "\" y1=\"" << num(T)
           << "\" y2=\"" << num(H - B) << "\" stroke=\"" << c << "\" stroke-dasharray=\"4,3\"/><text x=\""
           << num(px(m.x) + 3) << "\" y=\"" << num(T + 12) << "\" fill=\"" << c << "\">" << xml_escape(m.label)
           << "</text>\n";
    }
    // series: one polyline per run of finite points (NaN/inf break the line)
    for (size_t i = 0; i < p.series.size(); ++i) {
        const PlotSeries& s = p.series[i];
        const std::string c = xml_escape(s.color.empty() ? palette[i % 9] : s.color);
        std::string pts;
        size_t npts = 0;
        auto flush = [&] {
            if (npts == 1) {  // a lone point: a dot, so it is visible
                const auto comma = pts.find(',');
                os << "<circle cx=\"" << pts.substr(0, comma) << "\" cy=\"" << pts.substr(comma + 1, pts.size() - comma - 2)
                   << "\" r=\"2\" fill=\"" << c << "\"/>\n";
            } else if (npts > 1) {
                os << "<polyline fill=\"none\" stroke=\"" << c << "\" stroke-width=\"1.5\""
                   << (s.dashed ? " stroke-dasharray=\"6,3\"" : "") << " points=\"" << pts << "\"/>\n";
            }
            pts.clear();
            npts = 0;
        };
        for (size_t j = 0; j < s.x.size(); ++j) {
            if (!std::isfinite(s.x[j]) || !std::isfinite(s.y[j])) {
                flush();
                continue;
            }
            pts += num(px(s.x[j])) + "," + num(py(s.y[j])) + " ";
            ++npts;
        }
        flush();
        os << "<text x=\"" << num(W - R + 10) << "\" y=\"" << num(T + 16 * (i + 1)) << "\" fill=\"" << c << "\">"
           << xml_escape(s.name) << "</text>\n";
    }
    os << "</svg>\n";
    return os.str();
}

/// Writes svg_line_plot(p) to path (atomically: a reader never sees half a file).
inline void write_svg(const std::string& path, const LinePlot& p) {
    const std::string s = svg_line_plot(p);
    write_file_atomic(path, std::vector<uint8_t>(s.begin(), s.end()));
}

}  // namespace moekd::io

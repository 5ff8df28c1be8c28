// figures.hpp — the paper's figures from the runs' JSONL logs, as self-contained SVG files
// (moekd/io/svg_plot.hpp; no plotting tool needed):
//   OUT/ce_moe.svg     training cross-entropy of the MoE model over updates, one line per mode
//                      (Single / ConstJT / TSJT), as the paper's Figure 3 (which has no
//                      separate panels: one plot per model is our layout)
//   OUT/ce_dense.svg   the same for the dense (shared) or device (indep) model
//   OUT/kl.svg         symmetric KL between the two models over updates (Figure 4)
// The TSJT stage-1 -> stage-2 switch is a dashed vertical line on all three. The KL figure leaves
// Single out when joint runs are there (its KL is only measured, and an order of magnitude larger). Each point is the
// mean over the updates since the previous log line (the log's *_avg fields; logs written before
// those fields existed fall back to the single update's value).
#pragma once

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>
#include <moekd/io/svg_plot.hpp>

namespace tsjt {

/// One run's logged curve.
struct Curve {
    std::string mode;                         // single, constjt, tsjt
    int64_t switch_step = -1;                 // TSJT's stage switch (-1: none)
    std::vector<double> step, ce_moe, ce_dense, kl;
};

/// Reads DIR/log.jsonl of one run. A line that is not JSON is an error naming the file and line.
inline Curve read_curve(const std::string& log_path, const std::string& mode, int64_t switch_step) {
    Curve c;
    c.mode = mode;
    c.switch_step = switch_step;
    std::ifstream in(log_path);
    MOEKD_CHECK(in.good(), "tsjt: cannot read the log '", log_path, "'");
    int line_no = 0;
    for (std::string line; std::getline(in, line);) {
        ++line_no;
        if (line.empty()) continue;
        const nlohmann::json v = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
        MOEKD_CHECK(v.is_object(), "tsjt: '", log_path, "' line ", line_no, " is not JSON (an object per line)");
        auto number = [&](const char* k) {
            MOEKD_CHECK(v.contains(k) && v[k].is_number(), "tsjt: '", log_path, "' line ", line_no, ": no number '", k, "'");
            return v[k].get<double>();
        };
        auto get = [&](const char* avg, const char* one) { return v.contains(avg) ? number(avg) : number(one); };
        c.step.push_back(number("step"));
        c.ce_moe.push_back(get("ce_moe_avg", "ce_moe"));
        c.ce_dense.push_back(get("ce_dense_avg", "ce_dense"));
        c.kl.push_back(get("kl_avg", "kl"));
    }
    return c;
}

inline std::string mode_label(const std::string& m) {
    return m == "single" ? "Single" : m == "constjt" ? "ConstJT" : m == "tsjt" ? "TSJT" : m;
}

/// One figure: `which` of every curve (0: MoE CE, 1: dense CE, 2: KL).
inline io::LinePlot curve_plot(const std::vector<Curve>& curves, int which, bool indep) {
    const char* small = indep ? "device" : "dense";
    io::LinePlot p;
    p.x_label = "update";
    p.x_min = 0;
    if (which == 2) {
        p.title = std::string("symmetric KL between the MoE and ") + small + " model (training)";
        p.y_label = "KL_sym";
        p.y_min = 0;
    } else {
        p.title = std::string("training cross-entropy, ") + (which == 0 ? "MoE" : small) + " model";
        p.y_label = "cross-entropy (label-smoothed)";
    }
    static const char* colors[] = {"#1f77b4", "#ff7f0e", "#d62728", "#2ca02c", "#9467bd"};
    // the KL figure shows the runs that train on the KL; Single's (measured, never trained on, and
    // much larger) only when it is the only run
    bool any_joint = false;
    for (const Curve& c : curves) any_joint = any_joint || c.mode != "single";
    for (size_t i = 0; i < curves.size(); ++i) {
        const Curve& c = curves[i];
        if (which == 2 && any_joint && c.mode == "single") continue;
        io::PlotSeries s;
        s.name = mode_label(c.mode);
        s.color = c.mode == "single" ? colors[0] : c.mode == "constjt" ? colors[1] : c.mode == "tsjt" ? colors[2] : colors[3 + i % 2];
        s.x = c.step;
        s.y = which == 0 ? c.ce_moe : which == 1 ? c.ce_dense : c.kl;
        if (which == 2 && c.mode == "single") s.name += " (not trained on)", s.dashed = true;
        p.series.push_back(std::move(s));
        if (c.switch_step >= 0) {
            io::PlotMarker m;
            m.x = double(c.switch_step);
            m.label = mode_label(c.mode) + " stage 2 (" + std::to_string(c.switch_step) + ")";
            m.color = "#d62728";
            p.markers.push_back(m);
        }
    }
    return p;
}

/// Writes OUT/ce_moe.svg, OUT/ce_dense.svg, OUT/kl.svg; returns their paths.
inline std::vector<std::string> write_figures(const std::string& out, const std::vector<Curve>& curves, bool indep) {
    std::vector<std::string> paths;
    const char* names[] = {"ce_moe.svg", "ce_dense.svg", "kl.svg"};
    for (int which = 0; which < 3; ++which) {
        paths.push_back((std::filesystem::path(out) / names[which]).string());
        io::write_svg(paths.back(), curve_plot(curves, which, indep));
    }
    return paths;
}

}  // namespace tsjt

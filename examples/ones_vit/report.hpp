// report.hpp — the outputs of the OneS example: the results table (Markdown and JSON: model,
// #params and accuracy with MoE benefits eq. 8 as in the paper's Table 1, FFN FLOPs and inference
// throughput as in its Table 3, plus our own columns), and accuracy-vs-epoch curves of every run
// (CSV plus an SVG line plot; the paper's Figure 3 plots accuracy against epochs for its
// comparable-iterations ablation only, L. 289, 299). Files are
// written through io::write_text_atomic (every write checked, the previous file kept on failure).
#pragma once

#include <nlohmann/json.hpp>

#include <cmath>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include <moekd/io/atomic_file.hpp>
#include <moekd/io/svg_plot.hpp>

#include "train.hpp"

namespace ones_vit {

struct RunResult {
    std::string name, init, objective;  // e.g. "OneS", "copy + SVD-KG", "CE + KD"
    bool is_teacher = false, is_dense_baseline = false;
    int64_t params = 0;
    double ffn_mflops = 0;     // FFN FLOPs per image / 1e6
    double images_per_s = 0;   // measured inference throughput (0: not measured)
    double init_acc = 0;       // test accuracy right after initialisation (epoch 0)
    double acc = 0, best_acc = 0;
    double train_seconds = 0;
    std::vector<EpochRecord> history;

    static RunResult make(std::string name, std::string init, std::string objective, bool teacher = false,
                          bool dense = false) {
        RunResult r;
        r.name = std::move(name), r.init = std::move(init), r.objective = std::move(objective);
        r.is_teacher = teacher, r.is_dense_baseline = dense;
        return r;
    }
};

/// eq. 8: (score_student - score_dense) / (score_MoE - score_dense); NaN when undefined.
inline double moe_benefits(double student, double dense, double moe) {
    const double d = moe - dense;
    return std::fabs(d) < 1e-12 ? std::nan("") : (student - dense) / d;
}

inline std::string fmt(const char* f, double v) {
    if (std::isnan(v)) return "n/a";
    char b[64];
    std::snprintf(b, sizeof b, f, v);
    return b;
}

/// Finds teacher and dense baseline accuracies (NaN when not run).
inline void reference_scores(const std::vector<RunResult>& rs, double& moe, double& dense) {
    moe = dense = std::nan("");
    for (auto& r : rs) {
        if (r.is_teacher) moe = r.acc;
        if (r.is_dense_baseline) dense = r.acc;
    }
}

inline std::string markdown_table(const std::vector<RunResult>& rs) {
    double moe, dense;
    reference_scores(rs, moe, dense);
    std::ostringstream os;
    os << "| model | init | objective | #params | FFN MFLOPs/img | images/s | acc@init | test acc | best acc | MoE benefits | train s |\n"
       << "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|\n";
    for (auto& r : rs) {
        const double mb = r.is_teacher || r.is_dense_baseline ? std::nan("") : moe_benefits(r.acc, dense, moe);
        os << "| " << r.name << " | " << r.init << " | " << r.objective << " | " << r.params << " | "
           << fmt("%.2f", r.ffn_mflops) << " | " << (r.images_per_s > 0 ? fmt("%.0f", r.images_per_s) : "-") << " | "
           << fmt("%.4f", r.init_acc) << " | " << fmt("%.4f", r.acc) << " | " << fmt("%.4f", r.best_acc) << " | "
           << (r.is_teacher ? "(MoE)" : r.is_dense_baseline ? "(dense)" : fmt("%.3f", mb)) << " | "
           << fmt("%.1f", r.train_seconds) << " |\n";
    }
    return os.str();
}

/// A number for results.json: null when undefined (NaN).
inline nlohmann::ordered_json json_num(double v) { return std::isnan(v) ? nlohmann::ordered_json() : nlohmann::ordered_json(v); }

/// results.json: the run's configuration and one object per run.
inline std::string json_results(const std::vector<RunResult>& rs, const nlohmann::ordered_json& config) {
    double moe, dense;
    reference_scores(rs, moe, dense);
    nlohmann::ordered_json runs = nlohmann::ordered_json::array();
    for (const auto& r : rs) {
        const double mb = r.is_teacher || r.is_dense_baseline ? std::nan("") : moe_benefits(r.acc, dense, moe);
        nlohmann::ordered_json acc = nlohmann::ordered_json::array();
        for (const auto& h : r.history) acc.push_back(json_num(h.test_acc));
        runs.push_back({{"model", r.name}, {"init", r.init}, {"objective", r.objective}, {"params", r.params},
                        {"ffn_mflops_per_image", json_num(r.ffn_mflops)},
                        {"images_per_s", json_num(r.images_per_s > 0 ? r.images_per_s : std::nan(""))},
                        {"init_acc", json_num(r.init_acc)}, {"test_acc", json_num(r.acc)},
                        {"best_acc", json_num(r.best_acc)}, {"moe_benefits", json_num(mb)},
                        {"train_seconds", json_num(r.train_seconds)}, {"acc_per_epoch", acc}});
    }
    return nlohmann::ordered_json{{"config", config}, {"runs", runs}}.dump(1) + "\n";
}

inline std::string curves_csv(const std::vector<RunResult>& rs) {
    std::ostringstream os;
    os << "model,epoch,train_loss,test_acc,seconds\n";
    for (auto& r : rs)
        for (auto& h : r.history)
            os << r.name << "," << h.epoch << "," << fmt("%.6f", h.train_loss) << "," << fmt("%.6f", h.test_acc) << ","
               << fmt("%.2f", h.seconds) << "\n";
    return os.str();
}

/// Test accuracy vs epoch for every run, as a self-contained SVG (moekd/io/svg_plot.hpp).
inline std::string curves_svg(const std::vector<RunResult>& rs) {
    int max_epoch = 1;
    double lo = 1.0, hi = 0.0;
    for (auto& r : rs)
        for (auto& h : r.history) {
            max_epoch = std::max(max_epoch, h.epoch);
            if (h.epoch > 0 || r.history.size() == 1) lo = std::min(lo, h.test_acc), hi = std::max(hi, h.test_acc);
        }
    if (hi < lo) lo = 0, hi = 1;
    lo = std::floor(lo * 20) / 20, hi = std::min(1.0, std::ceil(hi * 20) / 20 + 1e-9);
    if (hi - lo < 0.05) hi = lo + 0.05;
    io::LinePlot p;
    p.title = "Fashion-MNIST test accuracy vs epoch (epoch 0 = at initialisation, clipped to the axis)";
    p.x_label = "epoch";
    p.x_min = 0, p.x_max = max_epoch, p.y_min = lo, p.y_max = hi;
    p.x_ticks = max_epoch <= 20 ? max_epoch : 10;
    p.y_format = "%.3f";
    for (auto& r : rs) {
        io::PlotSeries s;
        s.name = r.name + " " + fmt("%.4f", r.acc);
        for (auto& h : r.history) s.x.push_back(h.epoch), s.y.push_back(h.test_acc);
        p.series.push_back(std::move(s));
    }
    return io::svg_line_plot(p);
}

/// Atomic and checked (every write, fsync and close): a full disk is an error naming the file.
inline void write_text(const std::string& path, const std::string& text) { io::write_text_atomic(path, text); }

}  // namespace ones_vit
